"""pifr.face3d: the shipped 3D face and the per-face fit, on the shipped example photos."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.errors import FitError

from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def turned():
    img = pifr.load_image(EXAMPLES / "mitchell_turned.png")
    return img, pifr.detect(img)[0]


def test_thin_plate_is_exact_at_the_landmarks_and_reproduces_affine_maps():
    from pifr.face3d import face_model, thin_plate_weights

    m = face_model()
    w = thin_plate_weights(m.landmarks_mean, np.vstack([m.landmarks_mean, m.vertices[:50]]))
    a = np.array([[1.1, 0.1, 0.0], [0.0, 0.9, 0.2], [0.05, 0.0, 1.0]])
    moved = m.landmarks_mean @ a.T + 1000.0
    out = w @ moved
    assert np.allclose(out[:68], moved, atol=1.0)  # micrometres
    assert np.allclose(out[68:], m.vertices[:50] @ a.T + 1000.0, atol=1.0)


def test_mesh_is_left_right_symmetric():
    from pifr.face3d import face_model

    m = face_model()
    v = m.vertices
    assert np.median(np.abs(v[m.mirror, 0] + v[:, 0])) < 2000  # under 2 mm
    assert (m.mirror[m.mirror] == np.arange(len(v))).all()


def test_fit_agrees_with_the_detector_and_the_yaw_estimator(turned):
    from pifr.face3d import fit_faces, landmarks5_from_68

    img, face = turned
    fit = fit_faces(img, [face])[0]
    assert abs(fit.yaw - pifr.estimate_yaw(img, face)) < 1.0
    err = np.linalg.norm(landmarks5_from_68(fit.landmarks68()) - face.landmarks, axis=1).mean()
    assert err < 0.12 * face.width, err


def test_a_tiny_face_is_refused_with_a_typed_error_naming_it():
    from pifr.face3d import fit_faces

    img = pifr.load_image(EXAMPLES / "night_frontal.png")
    face = pifr.detect(img)[0]
    tiny = pifr.Face(np.array([10, 10, 20, 22], np.float32), 0.9, face.landmarks * 0 + [[12, 14], [17, 14], [15, 17], [13, 20], [17, 20]])
    with pytest.raises(FitError, match="small.jpg"):
        fit_faces(img, [tiny], names=["small.jpg"])


@pytest.mark.parametrize("yaw,pitch", [(30.0, 10.0), (89.0, 20.0), (-75.0, -15.0), (0.0, 40.0)])
def test_pose_angles_read_back_a_view_rotation_even_near_profile(yaw, pitch):
    """Pitch is the face direction's elevation, defined at ±90° of yaw (an Euler atan2 form read
    real CFP profiles as pitched 77° and refused them)."""
    from pifr.face3d import angles
    from pifr.rotation import view_rotation

    assert np.allclose(angles(view_rotation(yaw, pitch))[:2], (yaw, pitch), atol=1e-6)
