"""3D face geometry: classical frontalization (Hassner, Harel, Paz, Enbar, "Effective Face
Frontalization in Unconstrained Images", CVPR 2015) and rendering a real face at a new yaw.

One reference 3D face serves both: ``model3Ddlib.mat`` gives the 3D point behind every pixel of
a 320×320 frontal reference view (``refU``), that view's camera (``outA``) and its 68 landmarks
in 3D (``threedee``) and in the view (``ref_XY``). Its licence is academic, so pifr never ships
it: pass its path, or put it in ``$PIFR_WEIGHTS_DIR`` (registry name ``hassner_model3d_dlib``).

* :func:`frontalize_3d` — pose from 68 dlib landmarks ↔ ``threedee`` (``cv2.solvePnP``), every
  reference pixel's 3D point projected into the photo and sampled; pixels the head hides from
  the camera (found with a z-buffer in the photo) are filled from their mirror pixel, blended
  softly ("soft symmetry"), except inside the eyes.
* :func:`render_at_yaw` — texture the reference surface from a frontal photo the same way, turn
  it about the vertical axis, and splat it with a z-buffer: a pixel-exact (render at yaw, render
  at 0°) pair with known landmarks and yaw, for training.

Model coordinates: x to the subject's left→right as seen in the view, y depth (towards the
camera is negative), z up. All steps are vectorised numpy/OpenCV.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .alignment import TPGAN_128, AlignmentTemplate, align_with_landmarks
from .errors import NoFaceError, WeightsFormatError
from .image import ImageLike, load_image
from .types import Face

REF_SIZE = 320


@dataclass(frozen=True)
class ReferenceFace:
    """The reference 3D face. ``points`` ``(320, 320, 3)`` 3D point per reference pixel; ``camera``
    ``(3, 3)`` intrinsics; ``landmarks3d`` ``(68, 3)``; ``landmarks2d`` ``(68, 2)`` 0-based pixels of
    the reference view; ``rvec``/``tvec`` the reference view's pose; ``eyemask`` ``(320, 320)`` bool."""

    points: np.ndarray
    camera: np.ndarray
    landmarks3d: np.ndarray
    landmarks2d: np.ndarray
    rvec: np.ndarray
    tvec: np.ndarray
    eyemask: np.ndarray

    @property
    def face_mask(self) -> np.ndarray:
        """``(320, 320)`` bool: the face and forehead in the reference view — the jaw line and
        brows, with the brows raised by 60 % of their distance to the nose tip. Rendering at a new
        yaw uses only this region: the flat surround of the model would swing in front of the face."""
        import cv2

        lm = self.landmarks2d
        brows = lm[17:27]
        up = brows + (brows - lm[30]) * 0.6
        hull = cv2.convexHull(np.vstack([lm[0:17], brows, up]).astype(np.float32)).astype(np.int32)
        m = np.zeros((REF_SIZE, REF_SIZE), np.uint8)
        cv2.fillConvexPoly(m, hull, 1)
        return m.astype(bool)

    @property
    def landmarks5(self) -> np.ndarray:
        """pifr's 5 points in the reference view: eye centres, nose tip, mouth corners."""
        return landmarks5_from_68(self.landmarks2d)


def landmarks5_from_68(lm68: np.ndarray) -> np.ndarray:
    lm = np.asarray(lm68, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


@functools.lru_cache(maxsize=2)
def load_reference(model_path: Optional[str] = None, eyemask_path: Optional[str] = None) -> ReferenceFace:
    """Load and check the reference face (registry: explicit path → $PIFR_WEIGHTS_DIR → …, sha256-checked)."""
    import cv2
    import scipy.io as sio

    from .weights import resolve

    _, mp = resolve("hassner_model3d_dlib", model_path)
    try:
        md = sio.loadmat(str(mp), squeeze_me=True, struct_as_record=False)["model_dlib"]
        points = np.asarray(md.refU, np.float64)
        camera = np.asarray(md.outA, np.float64)
        l3 = np.asarray(md.threedee, np.float64)
        l2 = np.asarray(md.ref_XY, np.float64) - 1.0  # MATLAB's 1-based pixels → 0-based
    except Exception as e:  # noqa: BLE001
        raise WeightsFormatError(f"{mp}: not the Hassner model3Ddlib.mat ({e})") from e
    if points.shape != (REF_SIZE, REF_SIZE, 3) or l3.shape != (68, 3):
        raise WeightsFormatError(f"{mp}: unexpected shapes refU {points.shape}, threedee {l3.shape}")
    eyemask = np.zeros((REF_SIZE, REF_SIZE), bool)
    try:
        _, ep = resolve("hassner_eyemask", eyemask_path or (str(Path(mp).with_name("eyemask.mat"))))
        eyemask = np.asarray(sio.loadmat(str(ep), squeeze_me=True)["eyemask"]).reshape(REF_SIZE, REF_SIZE, -1)[..., 0] > 0
    except Exception:  # noqa: BLE001 - the eye mask only refines the symmetry fill
        pass
    ok, rvec, tvec = cv2.solvePnP(l3, l2, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    return ReferenceFace(points, camera, l3, l2, rvec.reshape(3), tvec.reshape(3), eyemask)


@functools.lru_cache(maxsize=1)
def _predictor68() -> Any:
    import dlib

    from .weights import resolve

    _, p = resolve("dlib_landmarks68")
    return dlib.shape_predictor(str(p))


def landmarks68(img: np.ndarray, face: Face) -> np.ndarray:
    """dlib's 68 landmarks ``(68, 2)`` for ``face`` in ``img`` (``(H, W, 3)`` uint8 RGB)."""
    import dlib

    x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
    shape = _predictor68()(img, dlib.rectangle(x1, y1, x2, y2))
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def estimate_pose(lm68: np.ndarray, ref: ReferenceFace) -> Tuple[np.ndarray, np.ndarray]:
    """Rotation ``(3, 3)`` and translation ``(3,)`` of the reference head in the photo's camera
    (the reference intrinsics), from 2D–3D landmark correspondences."""
    import cv2

    ok, rvec, tvec = cv2.solvePnP(ref.landmarks3d, np.asarray(lm68, np.float64), ref.camera, None,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise NoFaceError("head pose could not be estimated from the landmarks")
    return cv2.Rodrigues(rvec)[0], tvec.reshape(3)


def _project(points: np.ndarray, r: np.ndarray, t: np.ndarray, cam: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(N, 3)`` model points → ``(N, 2)`` pixels and ``(N,)`` depths."""
    pc = points @ r.T + t
    uv = pc @ cam.T
    return uv[:, :2] / uv[:, 2:3], pc[:, 2]


def _visible(uv: np.ndarray, depth: np.ndarray, shape: Tuple[int, int], tol: float = 6.0) -> np.ndarray:
    """Z-buffer visibility: a point is visible if nothing nearer projects to its (rounded) pixel."""
    h, w = shape
    px = np.round(uv).astype(np.int64)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    flat = px[:, 1] * w + px[:, 0]
    zbuf = np.full(h * w, np.inf)
    np.minimum.at(zbuf, flat[inside], depth[inside])
    vis = np.zeros(len(depth), bool)
    vis[inside] = depth[inside] <= zbuf[flat[inside]] + tol
    return vis


def _soft_symmetry(tex: np.ndarray, vis: np.ndarray, eyemask: np.ndarray) -> np.ndarray:
    """Fill hidden reference pixels from their mirror across the view's vertical midline, with a
    smooth weight so no seam shows; the eyes keep their own pixels (mirrored eyes look wrong)."""
    import cv2

    w = cv2.GaussianBlur(vis.astype(np.float32), (0, 0), 6)
    w = np.where(eyemask, 1.0, w)[..., None]
    mirrored = tex[:, ::-1]
    wm = w[:, ::-1]
    # Where both sides are hidden, keep what was sampled.
    out = (tex * w + mirrored * (1 - w) * (wm > w)) / np.maximum(w + (1 - w) * (wm > w), 1e-6)
    return np.clip(out, 0, 255)


def texture_from_photo(img: np.ndarray, lm68: np.ndarray, ref: ReferenceFace) -> Tuple[np.ndarray, np.ndarray, float]:
    """Colour of every reference pixel sampled from the photo, with hidden pixels filled by soft
    symmetry. Returns ``(texture (320, 320, 3) float32, visibility (320, 320) bool, yaw degrees)``."""
    import cv2

    r, t = estimate_pose(lm68, ref)
    pts = ref.points.reshape(-1, 3)
    uv, depth = _project(pts, r, t, ref.camera)
    vis = _visible(uv, depth, img.shape[:2]).reshape(REF_SIZE, REF_SIZE)
    mapx = uv[:, 0].reshape(REF_SIZE, REF_SIZE).astype(np.float32)
    mapy = uv[:, 1].reshape(REF_SIZE, REF_SIZE).astype(np.float32)
    tex = cv2.remap(img, mapx, mapy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)
    tex = _soft_symmetry(tex, vis, ref.eyemask)
    return tex.astype(np.float32), vis, yaw_of_rotation(r, ref)


def yaw_of_rotation(r: np.ndarray, ref: ReferenceFace) -> float:
    """Yaw (pifr convention: + = face turned towards the image's right) of a head pose relative to the reference view."""
    import cv2

    r_ref = cv2.Rodrigues(ref.rvec)[0]
    rel = r @ r_ref.T  # rotation taking the reference view's camera frame to this one
    # Heading of the face's forward axis (camera −z in the reference frame) after the rotation.
    fwd = rel @ np.array([0.0, 0.0, -1.0])
    return math.degrees(math.atan2(fwd[0], -fwd[2]))


@dataclass(frozen=True)
class Frontal3D:
    """Result of :func:`frontalize_3d`: the aligned frontal crop, the 320 reference-view image,
    which reference pixels the photo showed, and the estimated yaw."""

    image: np.ndarray
    reference_view: np.ndarray
    visible: np.ndarray
    yaw: float
    face: Face


def frontalize_3d(img: ImageLike, *, face: Optional[Face] = None, template: AlignmentTemplate = TPGAN_128,
                  model_path: Optional[str] = None, detector: Optional[str] = None) -> Frontal3D:
    """Classical frontalization (Hassner et al. 2015) of the largest face in ``img``, returned on
    ``template`` (default: the same 128×128 TP-GAN crop as the learned frontalizer)."""
    from .detection import detect_one

    arr = load_image(img)
    face = face or detect_one(arr, detector=detector, purpose=" to frontalize")
    ref = load_reference(model_path)
    tex, vis, yaw = texture_from_photo(arr, landmarks68(arr, face), ref)
    view = tex.round().astype(np.uint8)
    crop, _ = align_with_landmarks(view, ref.landmarks5, template)
    return Frontal3D(crop, view, vis, yaw, face)


@dataclass(frozen=True)
class Render:
    """A face rendered at a known yaw: ``image`` (320×320 RGB, black background), its 5 landmarks
    (pixels), the requested ``yaw`` (pifr convention) and the coverage mask."""

    image: np.ndarray
    landmarks: np.ndarray
    yaw: float
    mask: np.ndarray


def _rotation_z(yaw_deg: float) -> np.ndarray:
    a = math.radians(yaw_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _fill(values: np.ndarray, valid: np.ndarray, region: np.ndarray,
          sigmas: Sequence[float] = (1.5, 3.0, 6.0, 12.0)) -> Tuple[np.ndarray, np.ndarray]:
    """Fill float ``values`` (H, W, C) where not ``valid`` but inside ``region`` by normalised
    convolution at growing scales ``sigmas`` (px). Returns ``(filled, have)``, ``have`` marking
    the pixels that now hold a value (the largest scale may not reach everywhere)."""
    import cv2

    out = values.copy()
    have = valid.copy()
    for sigma in sigmas:
        todo = region & ~have
        if not todo.any():
            break
        w = cv2.GaussianBlur(have.astype(np.float32), (0, 0), sigma)
        num = cv2.GaussianBlur(out * have[..., None], (0, 0), sigma)
        num = num.reshape(out.shape)
        ok = todo & (w > 1e-3)
        out[ok] = num[ok] / w[ok][:, None]
        have = have | ok
    return out, have


def fill_background(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``img`` (H, W, 3) uint8 with everything outside ``mask`` (H, W) bool replaced by the colours
    at the mask's edge, spread outwards and blurred more the farther they go (normalised
    convolution at growing scales): an out-of-focus stand-in for a background, so that a rendered
    face does not sit on black, which no real photo does. Pixels inside ``mask`` are unchanged."""
    if not mask.any():
        raise ValueError("empty mask: nothing to spread")
    out, have = _fill(img.astype(np.float32), mask, np.ones_like(mask), sigmas=(2.0, 4.0, 8.0, 16.0, 32.0, 64.0))
    out[~have] = img[mask].mean(0)
    return np.where(mask[..., None], img, out.round().clip(0, 255).astype(np.uint8))


def _splat_radius(uv: np.ndarray, keep: np.ndarray, max_radius: int) -> np.ndarray:
    """Per grid point of a projected surface (``uv`` ``(n, n, 2)`` pixels, ``keep`` ``(n, n)`` on
    the surface): the half-width in pixels of the square that closes the gaps to its grid
    neighbours, 0 where neighbours are at most a pixel apart, at most ``max_radius``."""
    gap = np.zeros(keep.shape, np.float32)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        dist = np.linalg.norm(uv[tuple(a)] - uv[tuple(b)], axis=2)
        dist = np.where(keep[tuple(a)] & keep[tuple(b)], dist, 0)
        gap[tuple(a)] = np.maximum(gap[tuple(a)], dist)
        gap[tuple(b)] = np.maximum(gap[tuple(b)], dist)
    return np.clip(np.ceil((gap - 1) / 2), 0, max_radius).astype(np.int64)


def turned_view(ref: ReferenceFace, yaw: float, supersample: int = 2, max_radius: int = 4,
                occlusion_mm: float = 10.0, depth_scale: float = 1.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference head turned by ``yaw`` degrees about its vertical axis, seen by the reference
    camera: ``(ref_px (320, 320, 2) float32, region (320, 320) bool, landmarks5 (5, 2))`` — for
    each pixel of the turned view, the reference-view pixel of the surface point it shows (valid
    inside ``region``), and pifr's 5 points in the turned view.

    ``depth_scale`` stretches the head front to back about the middle of its landmarks before it
    turns (e.g. 0.85: a flatter face, 1.15: a deeper one with a longer nose). The reference view
    barely changes (depth is along the camera's axis), so a texture taken from a photo through the
    unscaled head fits any scale; turned, the silhouette and the hidden side change, which lets
    renders show more than the one reference head shape.

    The z-buffer is splatted with *reference-pixel coordinates* rather than colours; gaps where the
    turned surface stretches are filled by interpolating those coordinates, so a texture sampled
    through the map has no holes and no blocky splats.
    """
    import cv2

    # Rotate about a vertical axis through the head's centre (mean of its 68 landmarks, pushed back).
    centre = ref.landmarks3d.mean(0) + np.array([0.0, 80.0, 0.0])
    rz = _rotation_z(yaw)  # + turns the face towards the image's right (checked against 3DDFA in the tests)
    s = supersample
    big = (REF_SIZE * s, REF_SIZE * s)
    n = REF_SIZE * s
    pts = cv2.resize(ref.points, big, interpolation=cv2.INTER_LINEAR).reshape(-1, 3)
    lm3 = ref.landmarks3d
    if depth_scale != 1.0:
        mid = ref.landmarks3d[:, 1].mean()
        pts, lm3 = pts.copy(), lm3.copy()
        pts[:, 1] = mid + (pts[:, 1] - mid) * depth_scale
        lm3[:, 1] = mid + (lm3[:, 1] - mid) * depth_scale
    gy, gx = np.mgrid[0:n, 0:n].astype(np.float32) / s
    coords = np.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    keep = cv2.resize(ref.face_mask.astype(np.uint8), big, interpolation=cv2.INTER_NEAREST).reshape(-1) > 0
    rot = (pts - centre) @ rz.T + centre
    r_ref = cv2.Rodrigues(ref.rvec)[0]
    uv, depth = _project(rot, r_ref, ref.tvec, ref.camera)
    radius = _splat_radius(uv.reshape(n, n, 2), keep.reshape(n, n), max_radius).reshape(-1)
    uv, depth, coords, radius = uv[keep], depth[keep], coords[keep], radius[keep]
    px = np.round(uv).astype(np.int64)
    inside = (px[:, 0] >= 0) & (px[:, 0] < REF_SIZE) & (px[:, 1] >= 0) & (px[:, 1] < REF_SIZE)
    px, d, coords, radius = px[inside], depth[inside], coords[inside], radius[inside]
    flat = px[:, 1] * REF_SIZE + px[:, 0]
    zbuf = np.full(REF_SIZE * REF_SIZE, np.inf)
    np.minimum.at(zbuf, flat, d)
    # Where the turned surface stretches (a cheek the reference view sees at a grazing angle), its
    # points spread apart and a farther surface (the other eye, the far cheek) shows through the
    # gaps as a lattice of dots. Each point therefore also covers a square as wide as the gap to
    # its grid neighbours; a point under a nearer surface's square loses, and the pixels it leaves
    # are interpolated from that surface below. Unstretched surfaces (silhouettes) keep 1 px.
    cover = zbuf.copy()
    for oy in range(-max_radius, max_radius + 1):
        for ox in range(-max_radius, max_radius + 1):
            sel = radius >= max(abs(ox), abs(oy))
            if not sel.any() or (ox == 0 and oy == 0):
                continue
            x, y = px[sel, 0] + ox, px[sel, 1] + oy
            ok = (x >= 0) & (x < REF_SIZE) & (y >= 0) & (y < REF_SIZE)
            np.minimum.at(cover, y[ok] * REF_SIZE + x[ok], d[sel][ok])
    win = (d <= zbuf[flat] + 1e-9) & (d <= cover[flat] + occlusion_mm)
    cmap = np.zeros((REF_SIZE * REF_SIZE, 2), np.float32)
    cmap[flat[win]] = coords[win]
    valid = np.zeros(REF_SIZE * REF_SIZE, bool)
    valid[flat[win]] = True
    valid = valid.reshape(REF_SIZE, REF_SIZE)
    region = cv2.morphologyEx(valid.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8)).astype(bool)
    cmap, _ = _fill(cmap.reshape(REF_SIZE, REF_SIZE, 2), valid, region)
    lm3 = (lm3 - centre) @ rz.T + centre
    lm2, _ = _project(lm3, r_ref, ref.tvec, ref.camera)
    return cmap, region, landmarks5_from_68(lm2)


def render_texture(tex: np.ndarray, ref: ReferenceFace, yaw: float, supersample: int = 2,
                   view: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None) -> Render:
    """Turn the textured reference head by ``yaw`` degrees about its vertical axis and render it
    from the reference camera with a z-buffer (:func:`turned_view`), sampling the texture once
    with bilinear interpolation. ``view``: that function's result for this ``ref`` and ``yaw``,
    when rendering many textures at the same yaws (it depends on nothing else)."""
    import cv2

    cmap, region, lm5 = view if view is not None else turned_view(ref, yaw, supersample)
    img = cv2.remap(tex, cmap[..., 0], cmap[..., 1], interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    img = np.where(region[..., None], img, 0).round().clip(0, 255).astype(np.uint8)
    return Render(img, lm5.astype(np.float32), float(yaw), region)


@functools.lru_cache(maxsize=64)
def _turned_view_cached(yaw: float, model_path: Optional[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    return turned_view(load_reference(model_path), yaw)


def frontal_flow(landmarks: np.ndarray, yaw: float, template: AlignmentTemplate = TPGAN_128, *,
                 model_path: Optional[str] = None, yaw_step: float = 5.0) -> Tuple[np.ndarray, np.ndarray]:
    """Where each pixel of an aligned crop of a turned face lies on the frontal face.

    The crop (``template.size`` square, its face's 5 landmarks ``landmarks`` ``(5, 2)`` in crop
    pixels, turned by ``yaw`` degrees, pifr's sign) is matched to the reference head turned by
    ``yaw`` (rounded to ``yaw_step``) through a similarity on the 5 points; each crop pixel on the
    head's surface is followed to the reference (frontal) view and from there into ``template``'s
    frontal frame. Returns ``(flow (S, S, 2) float32 — frontal-frame pixel (x, y) of each crop
    pixel, valid (S, S) bool — the crop pixels that show the head's face surface)``. With the
    reference head, not the person's, and 5 points, expect errors of a few pixels.
    """
    import cv2

    from .alignment import similarity_transform

    yaw = float(np.clip(round(yaw / yaw_step) * yaw_step, -90, 90))
    cmap, region, lm_view = _turned_view_cached(yaw, model_path)
    ref = load_reference(model_path)
    size = template.size
    to_view = similarity_transform(np.asarray(landmarks, np.float64), lm_view)  # crop px → turned-view px
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float64)
    vx = to_view[0, 0] * gx + to_view[0, 1] * gy + to_view[0, 2]
    vy = to_view[1, 0] * gx + to_view[1, 1] * gy + to_view[1, 2]
    vx, vy = vx.astype(np.float32), vy.astype(np.float32)
    ref_px = cv2.remap(cmap, vx, vy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.remap(region.astype(np.uint8), vx, vy, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT) > 0
    to_tpl = similarity_transform(ref.landmarks5, template.array)  # reference-view px → template px
    fx = to_tpl[0, 0] * ref_px[..., 0] + to_tpl[0, 1] * ref_px[..., 1] + to_tpl[0, 2]
    fy = to_tpl[1, 0] * ref_px[..., 0] + to_tpl[1, 1] * ref_px[..., 1] + to_tpl[1, 2]
    flow = np.stack([fx, fy], -1).astype(np.float32)
    valid &= (fx >= 0) & (fx <= size - 1) & (fy >= 0) & (fy <= size - 1)
    return flow, valid


def render_at_yaw(frontal_img: ImageLike, yaw: float, *, face: Optional[Face] = None, model_path: Optional[str] = None,
                  detector: Optional[str] = None) -> Render:
    """Render a real (near-)frontal face at ``yaw`` degrees (±90 at most).

    Returns a :class:`Render` with the 320×320 image, its 5 landmarks and the true yaw; render the
    same face at 0° for a pixel-exact frontal target.
    """
    from .detection import detect_one

    if abs(yaw) > 90:
        raise ValueError("yaw must lie in [-90, 90] degrees")
    arr = load_image(frontal_img)
    face = face or detect_one(arr, detector=detector, purpose=" to render")
    ref = load_reference(model_path)
    tex, _, _ = texture_from_photo(arr, landmarks68(arr, face), ref)
    # The turned view depends only on the head and the yaw: rendering many faces reuses it.
    return render_texture(tex, ref, yaw, view=_turned_view_cached(float(yaw), model_path))
