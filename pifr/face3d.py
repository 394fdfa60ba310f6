"""Per-face 3D fit: camera, 68 3D landmarks and a dense mesh, from 3DDFA_V2's 62 parameters.

3DDFA_V2 (Guo et al., ECCV 2020; pifr's ``tddfa_mb05`` regressor, the one that reads yaw)
predicts, from the face's 120×120 ROI, a 3×4 scaled-orthographic camera and 40 shape + 10
expression coefficients of the Basel Face Model (Paysan et al., AVSS 2009). The dense shape
basis is not shipped (it is not obtainable here), so the dense mesh is the BFM mean face moved
onto the face's own 68 fitted landmarks by a 3D thin-plate spline, then posed by the camera
(the construction measured in ``docs/rotation.md``).

Model space: BFM units (micrometres), x towards the image's right in a frontal view, y up,
z towards the camera. Image space: pixels of the source photo, x right, y down.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .errors import FitError
from .types import Face

#: Faces whose 3DDFA ROI is narrower than this (px) are refused: the regressor sees a 120 px crop
#: and a face a few pixels wide gives a camera but no usable texture.
MIN_FACE_PX = 24
#: |pitch| beyond which a fit is refused (degrees): the training data (300W-LP) stops near here.
MAX_PITCH = 60.0
#: Thin-plate regularisation (model units²): small, so the mesh passes near every landmark.
TPS_SMOOTHING = 1e-3


@dataclass(frozen=True, eq=False)
class FaceModel:
    """The shipped 3D face (``weights/face3d_bfm.safetensors``; see ``scripts/build_face3d.py``).

    Attributes:
        vertices: ``(N, 3)`` mean face, model units.
        triangles: ``(T, 3)`` int32.
        mirror: ``(N,)`` int32 left/right mirror vertex of each vertex.
        landmarks_mean: ``(68, 3)`` the mean face's 68 landmarks.
        w_shp, w_exp: ``(204, 40)``, ``(204, 10)`` landmark basis in 3DDFA_V2's parameter space.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    mirror: np.ndarray
    landmarks_mean: np.ndarray
    w_shp: np.ndarray
    w_exp: np.ndarray
    sha256: str = ""

    @functools.cached_property
    def deform(self) -> np.ndarray:
        """``(N, 68)`` thin-plate weights: a face's mesh is ``deform @ its 68 landmarks``."""
        return thin_plate_weights(self.landmarks_mean, self.vertices)


@functools.lru_cache(maxsize=1)
def face_model() -> FaceModel:
    """The 3D face, loaded once (sha256-checked through the weights registry)."""
    from safetensors.numpy import load_file

    from .errors import WeightsFormatError
    from .weights import resolve

    spec, path = resolve("face3d_bfm")
    try:
        d = load_file(str(path))
        return FaceModel(d["vertices"].astype(np.float64), d["triangles"].astype(np.int64), d["mirror"].astype(np.int64),
                         d["landmarks_mean"].astype(np.float64), d["w_shp"].astype(np.float64),
                         d["w_exp"].astype(np.float64), spec.sha256 or "")
    except Exception as e:  # a wrong or truncated file is a weights problem, whatever the parser says
        raise WeightsFormatError(f"{path}: not a pifr 3D face file ({type(e).__name__}: {e})") from e


@dataclass(frozen=True)
class Fit3D:
    """A face's 3D fit in one photo.

    Attributes:
        camera: ``(3, 4)`` float64: ``camera @ [X, 1]`` = (x px, y px, depth px) in the photo for a
            model-space point X (depth larger = nearer the camera).
        rotation: ``(3, 3)`` the camera's rotation (model → camera axes, y down).
        landmarks3d: ``(68, 3)`` the face's own landmarks, model units.
        vertices: ``(N, 3)`` the dense mesh (mean face moved onto ``landmarks3d``), model units.
        yaw, pitch, roll: degrees, pifr's sign convention (yaw > 0: face turned towards the image's right).
        image_size: ``(H, W)`` of the photo.
    """

    camera: np.ndarray
    rotation: np.ndarray
    landmarks3d: np.ndarray
    vertices: np.ndarray
    yaw: float
    pitch: float
    roll: float
    image_size: Tuple[int, int]

    @property
    def scale(self) -> float:
        """Pixels per model unit."""
        return float(np.linalg.norm(self.camera[0, :3]))

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` model points → ``(N, 3)`` (x px, y px, depth px) in the photo."""
        return points @ self.camera[:, :3].T + self.camera[:, 3]

    def landmarks68(self) -> np.ndarray:
        """``(68, 2)`` fitted landmarks in photo pixels."""
        return self.project(self.landmarks3d)[:, :2]


def landmarks5_from_68(lm68: np.ndarray) -> np.ndarray:
    """pifr's 5 points (eye centres, nose tip, mouth corners) from the 68-point layout, ``(5, 2)``."""
    lm = np.asarray(lm68, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def thin_plate_weights(src: np.ndarray, points: np.ndarray, smoothing: float = TPS_SMOOTHING) -> np.ndarray:
    """The ``(N, K)`` matrix W of a 3D thin-plate spline (kernel r, plus affine) from fixed control
    points ``src`` ``(K, 3)``: the spline that moves ``src`` onto any ``dst`` moves ``points``
    ``(N, 3)`` to ``W @ dst``. With the control points fixed (the mean face's landmarks) the spline
    is linear in ``dst``, so a fit costs one small matrix product."""
    c = src.mean(0)
    s = float(np.sqrt(((src - c) ** 2).sum(1).mean())) or 1.0
    a, p = (src - c) / s, (points - c) / s
    k = len(a)
    lhs = np.zeros((k + 4, k + 4))
    lhs[:k, :k] = np.linalg.norm(a[:, None] - a[None], axis=2) + smoothing * np.eye(k)
    lhs[:k, k:] = np.hstack([np.ones((k, 1)), a])
    lhs[k:, :k] = lhs[:k, k:].T
    basis = np.hstack([np.linalg.norm(p[:, None] - a[None], axis=2), np.ones((len(p), 1)), p])  # (N, K + 4)
    # dst enters only the first K rows of the right-hand side; the affine rows are zero.
    return (basis @ np.linalg.inv(lhs))[:, :k]


def _camera_in_image(params: np.ndarray, roi: Sequence[float]) -> np.ndarray:
    """3DDFA's camera (to its 120 px ROI, y up) → a camera to photo pixels, y down."""
    p = np.asarray(params[:12], np.float64).reshape(3, 4)
    x1, y1, x2, y2 = roi
    s = (x2 - x1) / 120.0
    # 3DDFA_V2 reads x − 1 and 120 − y in its crop (its reconstruction code's convention).
    cam = np.empty((3, 4))
    cam[0] = p[0] * s
    cam[0, 3] += (-1.0) * s + x1
    cam[1] = -p[1] * s
    cam[1, 3] += 120.0 * s + y1
    cam[2] = p[2] * s
    return cam


def _rotation(cam: np.ndarray) -> np.ndarray:
    """Rows: image x, image y (down), towards the camera, in model axes."""
    r1 = cam[0, :3] / np.linalg.norm(cam[0, :3])
    r2 = cam[1, :3] - (cam[1, :3] @ r1) * r1
    r2 /= np.linalg.norm(r2)
    r3 = cam[2, :3] - (cam[2, :3] @ r1) * r1 - (cam[2, :3] @ r2) * r2
    return np.stack([r1, r2, r3 / np.linalg.norm(r3)])


def angles(rotation: np.ndarray) -> Tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a camera rotation (rows: image x, image y down, towards
    the camera) in pifr's convention: yaw > 0 when the face turns towards the image's right,
    pitch > 0 when it looks up."""
    r = rotation
    # The model's z axis (out of the face) seen in camera axes: (sin y·cos p, −sin p, cos y·cos p)
    # for a face turned by yaw y and pitch p. Pitch is its elevation, which stays defined at ±90°
    # of yaw (where atan2 forms of Euler angles are not).
    fz = r[:, 2]
    yaw = math.degrees(math.atan2(float(fz[0]), float(fz[2])))
    pitch = math.degrees(math.asin(float(np.clip(-fz[1], -1, 1))))
    fx = r[:, 0]
    roll = math.degrees(math.atan2(fx[1], fx[0]))
    return yaw, pitch, roll


def fit_params(params: np.ndarray, roi: Sequence[float], image_size: Tuple[int, int], model: Optional[FaceModel] = None) -> Fit3D:
    """A :class:`Fit3D` from 3DDFA_V2's 62 de-standardised parameters and the ROI they were read on."""
    m = model or face_model()
    params = np.asarray(params, np.float64)
    alpha, beta = params[12:52], params[52:62]
    lm = (m.landmarks_mean.reshape(-1) + m.w_shp @ alpha + m.w_exp @ beta).reshape(68, 3)
    cam = _camera_in_image(params, roi)
    if cam[2, 2] < 0:  # depth grows towards the camera: the face's front (model +z) faces it
        cam[2] = -cam[2]
    rot = _rotation(cam)
    vertices = m.deform @ lm
    yaw, pitch, roll = angles(rot)
    return Fit3D(cam, rot, lm, vertices, yaw, pitch, roll, (int(image_size[0]), int(image_size[1])))


def fit_from_params(params: np.ndarray, img_shape: Tuple[int, ...], face: Face, name: str = "the image",
                    model: Optional[FaceModel] = None) -> Fit3D:
    """The :class:`Fit3D` of ``face`` from its 3DDFA_V2 parameters ``(62,)``
    (:func:`pifr.pose.regress_faces`) in an image of shape ``img_shape``; ``name`` labels a refusal.

    Raises:
        FitError: a face too small to fit, or turned further up/down than the regressor handles.
    """
    from .models.tddfa import roi_from_bbox

    roi = roi_from_bbox(face.bbox)
    if roi[2] - roi[0] < MIN_FACE_PX:
        raise FitError(f"{name}: face is {face.width:.0f} px wide; the 3D fit needs at least {MIN_FACE_PX} px")
    fit = fit_params(np.asarray(params, np.float64), roi, img_shape[:2], model)
    if not np.all(np.isfinite(fit.camera)) or abs(fit.pitch) > MAX_PITCH:
        raise FitError(f"{name}: 3D fit refused (pitch {fit.pitch:.0f}°, beyond ±{MAX_PITCH:.0f}°)")
    return fit


def fit_faces(img: np.ndarray, faces: Sequence[Face], device: Any = None, names: Optional[Sequence[str]] = None) -> List[Fit3D]:
    """3D fits of ``faces`` in ``img`` (``(H, W, 3)`` uint8 RGB), one batched network pass.

    Raises:
        FitError: a face too small to fit, or turned further up/down than the regressor handles.
    """
    from .models.tddfa import roi_from_bbox
    from .pose import regress_faces

    if not faces:
        return []
    for i, f in enumerate(faces):  # before the network: a refused face costs nothing
        roi = roi_from_bbox(f.bbox)
        if roi[2] - roi[0] < MIN_FACE_PX:
            raise FitError(f"{names[i] if names else 'the image'}: face is {f.width:.0f} px wide; "
                           f"the 3D fit needs at least {MIN_FACE_PX} px")
    model = face_model()
    params = regress_faces([(img, f) for f in faces], device)
    return [fit_from_params(p, img.shape, f, names[i] if names else "the image", model)
            for i, (p, f) in enumerate(zip(params, faces))]
