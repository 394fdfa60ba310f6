"""pifr.alignment on real CFP and LFW faces."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.alignment import ARCFACE_112, DLIB_150, TPGAN_128, estimate_transform, transform_points


def test_tpgan_rule_levels_a_full_profile_by_eye_to_mouth(cfp):
    """A ~80° profile whose detected eyes are 3 px apart, one above the other: the eye line's
    direction is noise, and levelling it turned the crop sideways (landmarks hundreds of pixels
    outside it). Eye→mouth is made vertical instead; frontal faces are unchanged."""
    img = pifr.load_image(cfp / "Data" / "Images" / "361" / "profile" / "03.jpg")
    face = pifr.detect(img, yaw=False)[0]
    eyes = face.landmarks[1] - face.landmarks[0]
    assert np.hypot(*eyes) < 6  # the case this is about
    out = transform_points(face.landmarks, estimate_transform(face.landmarks, TPGAN_128))
    assert (np.abs(out - 64) < 64).all(), out  # every landmark inside the crop
    down = out[3:].mean(0) - out[:2].mean(0)
    assert abs(down[0]) < 1e-6 and down[1] == pytest.approx(48.0, abs=0.01)
    # A frontal face (eyes 43 px apart): the eye line decides, as before.
    lm = TPGAN_128.array.copy()
    lm[1, 1] += 6  # roll the eye line by ~8°
    out = transform_points(lm, estimate_transform(lm, TPGAN_128))
    assert abs(out[0, 1] - out[1, 1]) < 1e-6


def test_real_face_lands_on_template(lfw):
    img = pifr.load_image(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    face = pifr.detect(img, yaw=False)[0]
    for t in (ARCFACE_112, DLIB_150, TPGAN_128):
        crop = pifr.align(img, face, t)
        assert crop.shape == (t.size, t.size, 3) and crop.dtype == np.uint8
        # Re-detect in an upscaled crop: the landmarks must be near the template's.
        import cv2

        big = cv2.resize(crop, (256, 256))
        again = pifr.detect(big, yaw=False, min_score=0.5)
        assert again, f"no face re-detected in the {t.name} crop"
        lm = again[0].landmarks * t.size / 256
        if t.method == "similarity":
            err = np.linalg.norm(lm - t.array, axis=1).mean() / t.size
            assert err < 0.05, f"{t.name}: mean landmark error {err:.3f} of the crop size"
        else:  # TP-GAN's rule fixes the eye line and the eye→mouth distance, not all five points
            eye, mouth = lm[:2].mean(0), lm[3:].mean(0)
            assert abs(eye[1] - 41) < 3 and abs(eye[0] - 65) < 4 and abs(mouth[1] - eye[1] - 48) < 3, lm
