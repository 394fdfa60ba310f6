"""3D-guided face rotation: the face in a photo seen from any yaw and pitch.

Data flow: photo → face (detector) → 3D fit (:mod:`pifr.face3d`) → orthographic render at the
target pose, placed in an alignment template (the 128×128 TP-GAN crop by default). Each rendered
pixel is a point on the fitted face; its colour is sampled from the photo where the photo sees
that point, and — where the photo does not (the hidden half of a profile, or a surface seen
edge-on) — from the mirrored point on the other half of the face (the symmetry prior of Hassner
et al., CVPR 2015), blended smoothly at the seam. The visibility of each pixel in the photo is
returned as a mask, so a learned refiner (or a user) knows which pixels were seen.
:func:`rotate` with ``method="refined"`` hands the render (always in the TP-GAN crop, the only
crop the refiner was trained on) to that refiner (:mod:`pifr.refinement`) and moves its output
into the caller's template afterwards.

:func:`rotate_and_render` builds the training pairs of Rotate-and-Render (Zhou et al., CVPR 2020):
the face is rotated away to another yaw, re-textured from that render (hidden points take the
colour of whatever covers them) and rotated back, so the result carries the artefacts of a real
rotation while its target is the untouched photo.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from .alignment import (TPGAN_128, AlignmentTemplate, align_with_landmarks, estimate_transform, get_template,
                        template_transform, warp_to_template)
from .errors import PifrError, ShapeError
from .face3d import Fit3D, face_model, fit_faces, landmarks5_from_68
from .image import ImageLike, input_label, load_image
from .rendering import Raster, front_sign, rasterize, vertex_normals
from .types import Face

log = logging.getLogger("pifr")

#: Cosine between a surface normal and the view direction below which the photo's colour is
#: distrusted (a surface seen edge-on smears a few pixels over a large area); the weight rises
#: linearly to 1 over the next ``GRAZING_RAMP``.
GRAZING_COS = 0.1
GRAZING_RAMP = 0.3
#: Depth tolerance of the visibility test, as a share of the face's width in the photo.
VISIBILITY_TOL = 0.03
#: The source photo's visibility raster is at most this wide (px) across the face: finer buys
#: nothing, the test only needs to tell near from far surfaces.
VISIBILITY_RASTER_PX = 96
#: Largest |yaw| (degrees) a caller may ask for.
MAX_YAW = 90.0


@dataclass(frozen=True)
class Rotated:
    """A face rendered at a new pose.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB, black outside the face (S = the template's size, 128 by default).
        mask: ``(S, S)`` bool, pixels covered by the face.
        visibility: ``(S, S)`` float32 in [0, 1]: how far each pixel's colour was seen in the
            photo (0 = filled from the mirrored half or from an occluder).
        landmarks: ``(68, 2)`` float32 the target pose's 68 landmarks in output pixels.
        landmarks5: ``(5, 2)`` float32 pifr's 5 points derived from them.
        yaw_in, pitch_in: the photo's pose (degrees, from the fit).
        yaw_out, pitch_out: the rendered pose (degrees).
        template: name of the alignment template the output is placed in.
        render: ``(S, S, 3)`` uint8 the unrefined 3D render in the same template when ``image``
            is a refiner's output (``method="refined"``); ``None`` otherwise.
        method: what made ``image``: ``"3d"`` (the render itself) or ``"refined"``.
    """

    image: np.ndarray
    mask: np.ndarray
    visibility: np.ndarray
    landmarks: np.ndarray
    landmarks5: np.ndarray
    yaw_in: float
    pitch_in: float
    yaw_out: float
    pitch_out: float
    template: str = TPGAN_128.name
    render: Optional[np.ndarray] = None
    method: str = "3d"

    def to_dict(self) -> dict:
        return {"yaw_in": round(self.yaw_in, 2), "pitch_in": round(self.pitch_in, 2), "yaw_out": self.yaw_out,
                "pitch_out": self.pitch_out, "template": self.template, "method": self.method,
                "visible_share": round(float(self.visibility[self.mask].mean()) if self.mask.any() else 0.0, 4)}


def view_rotation(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """``(3, 3)`` model → camera rotation (rows: image x, image y down, towards the camera) of a
    face turned by ``yaw`` (> 0 towards the image's right) and ``pitch`` (> 0 looking up), degrees."""
    t, p = math.radians(yaw), math.radians(pitch)
    r_yaw = np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])
    r_pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return r_yaw @ r_pitch @ np.diag([1.0, -1.0, 1.0])


def template_camera(landmarks3d: np.ndarray, rotation: np.ndarray, template: AlignmentTemplate, scale: float = 1.0) -> np.ndarray:
    """``(3, 4)`` camera that views the model with ``rotation`` and places the face's 5 points as
    :func:`pifr.align` places a photographed face of that pose in ``template`` (then × ``scale``)."""
    cam_pts = landmarks3d @ rotation.T
    m = estimate_transform(landmarks5_from_68(cam_pts[:, :2]), template) * scale
    s = math.sqrt(abs(np.linalg.det(m[:, :2])))
    cam = np.zeros((3, 4))
    cam[:2, :3] = m[:, :2] @ rotation[:2]
    cam[:2, 3] = m[:, 2]
    cam[2, :3] = s * rotation[2]
    return cam


def _sample(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at ``(P, 2)`` float pixel positions → ``(P, C)`` float32 (0 outside)."""
    import cv2

    if len(xy) == 0:
        return np.zeros((0, img.shape[2]), np.float32)
    mx = np.ascontiguousarray(xy[:, 0].astype(np.float32)).reshape(1, -1)
    my = np.ascontiguousarray(xy[:, 1].astype(np.float32)).reshape(1, -1)
    # cv2.remap takes at most 32767 columns: sample in slices.
    out = []
    for i in range(0, mx.shape[1], 32000):
        out.append(cv2.remap(img, mx[:, i:i + 32000], my[:, i:i + 32000], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(-1, img.shape[2]))
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class _SourceView:
    """What the photo sees of the fitted face: a coarse depth raster for visibility tests."""

    proj: np.ndarray  # (N, 3) vertices in photo px + depth px
    facing: np.ndarray  # (N,) cosine between normal and the photo's view direction
    zbuf: np.ndarray  # (h, w) depth at raster resolution, -inf off the face
    k: float  # raster px per photo px
    origin: np.ndarray  # (2,) photo px at raster (0, 0)
    tol: float  # depth tolerance (photo px)


def _source_view(fit: Fit3D, triangles: np.ndarray, normals: np.ndarray) -> _SourceView:
    proj = fit.project(fit.vertices)
    lo, hi = proj[:, :2].min(0), proj[:, :2].max(0)
    width = float(max(hi[0] - lo[0], 1.0))
    k = min(1.0, VISIBILITY_RASTER_PX / width)
    origin = lo - 2.0 / k
    size = np.ceil((hi - lo) * k).astype(int) + 5
    ras = rasterize((proj[:, :2] - origin) * k, proj[:, 2], triangles, (int(size[1]), int(size[0])), front_sign(fit.camera))
    facing = normals @ fit.rotation[2]
    return _SourceView(proj, facing.astype(np.float32), ras.depth, k, origin, VISIBILITY_TOL * width)


def _seen(view: _SourceView, xy: np.ndarray, depth: np.ndarray, facing: np.ndarray) -> np.ndarray:
    """Weight in [0, 1] of how well the photo sees surface points at photo ``xy`` with ``depth``."""
    q = np.rint((xy - view.origin) * view.k).astype(np.int64)
    h, w = view.zbuf.shape
    inside = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
    z = np.full(len(xy), -np.inf, np.float32)
    z[inside] = view.zbuf[q[inside, 1], q[inside, 0]]
    front = depth >= z - view.tol
    ramp = np.clip((facing - GRAZING_COS) / GRAZING_RAMP, 0.0, 1.0)
    return (front * ramp).astype(np.float32)


def render_fit(fit: Fit3D, photo: np.ndarray, camera: np.ndarray, size: int, *, mirror_fill: bool = True,
               texture: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the fitted face through ``camera`` into a ``size``×``size`` image.

    Args:
        fit: the face's 3D fit in ``photo``.
        photo: ``(H, W, C)`` uint8 the fit was made on (RGB; extra channels are carried along).
        camera: ``(3, 4)`` target camera (model → output px + depth).
        mirror_fill: colour points the photo does not see from their mirrored point.
        texture: ``(image (h, w, C), camera)`` to take colours from instead of the photo, with no visibility
            test (every point takes whatever that image shows at its position — an occluder's colour
            for a hidden point): the re-texturing step of rotate-and-render.

    Returns:
        ``(image (S, S, 3) uint8 — C channels with ``texture`` —, mask (S, S) bool, visibility (S, S) float32)``.
    """
    if texture is None:
        return _render_seen(fit, photo, camera, size, mirror_fill, _photo_view(fit))
    ras = _raster(fit, camera, size)
    m = ras.mask
    tex_img, tex_cam = texture
    img = np.zeros((size, size, tex_img.shape[2]), np.float32)
    vis = np.zeros((size, size), np.float32)
    if m.any():
        tex_xy = ras.interpolate_covered(fit.vertices @ tex_cam[:2, :3].T + tex_cam[:2, 3], face_model().triangles)
        img[m] = _sample(tex_img, tex_xy)
        vis[m] = 1.0
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), m, vis


def _raster(fit: Fit3D, camera: np.ndarray, size: int) -> Raster:
    """The fitted face rasterised through ``camera`` (model → output px + depth) into ``size``×``size``."""
    out_proj = fit.vertices @ camera[:, :3].T + camera[:, 3]
    return rasterize(out_proj[:, :2], out_proj[:, 2], face_model().triangles, (size, size), front_sign(camera))


def _photo_view(fit: Fit3D) -> _SourceView:
    """What the photo sees of ``fit``: the same for every camera the face is rendered through."""
    model = face_model()
    return _source_view(fit, model.triangles, vertex_normals(fit.vertices, model.triangles))


def _render_seen(fit: Fit3D, photo: np.ndarray, camera: np.ndarray, size: int, mirror_fill: bool,
                 view: _SourceView) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`render_fit` from the photo, with its :func:`_photo_view` already made."""
    model = face_model()
    tris = model.triangles
    ras = _raster(fit, camera, size)
    m = ras.mask
    img = np.zeros((size, size, photo.shape[2]), np.float32)
    vis = np.zeros((size, size), np.float32)
    if not m.any():
        return img.astype(np.uint8), m, vis
    own = ras.interpolate_covered(np.hstack([view.proj, view.facing[:, None]]), tris)
    w_own = _seen(view, own[:, :2], own[:, 2], own[:, 3])
    c_own = _sample(photo, own[:, :2])
    colour = c_own
    if mirror_fill:
        mir = model.mirror
        other = ras.interpolate_covered(np.hstack([view.proj[mir], view.facing[mir, None]]), tris)
        w_mir = _seen(view, other[:, :2], other[:, 2], other[:, 3])
        c_mir = _sample(photo, other[:, :2])
        a, b = w_own[:, None], w_mir[:, None]
        colour = a * c_own + (1 - a) * (b * c_mir + (1 - b) * c_own)
    img[m] = colour
    vis[m] = w_own
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), m, vis


def _check_pose(yaw: float, pitch: float) -> Tuple[float, float]:
    for name, v in (("yaw", yaw), ("pitch", pitch)):
        if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(float(v)):
            raise ShapeError(f"{name} must be a finite number of degrees, got {v!r}")
    if abs(float(yaw)) > MAX_YAW or abs(float(pitch)) > 60.0:
        raise ShapeError(f"target pose must have |yaw| ≤ {MAX_YAW:.0f}° and |pitch| ≤ 60°, got yaw {yaw}, pitch {pitch}")
    return float(yaw), float(pitch)


def render_pose(fit: Fit3D, photo: np.ndarray, yaw: float, pitch: float = 0.0, *,
                template: Union[str, AlignmentTemplate] = TPGAN_128, mirror_fill: bool = True) -> Rotated:
    """The fitted face at (``yaw``, ``pitch``) degrees, placed in ``template`` as :func:`pifr.align`
    would place a photo of that pose."""
    return render_poses(fit, photo, [yaw], pitch, template=template, mirror_fill=mirror_fill)[0]


def render_poses(fit: Fit3D, photo: np.ndarray, yaws: Sequence[float], pitch: float = 0.0, *,
                 template: Union[str, AlignmentTemplate] = TPGAN_128, mirror_fill: bool = True) -> List[Rotated]:
    """:func:`render_pose` at each of ``yaws`` (degrees), in order; what the photo sees of the face
    is worked out once for all of them."""
    poses = [_check_pose(y, pitch) for y in yaws]
    t = get_template(template)
    view = _photo_view(fit) if poses else None
    out = []
    for yaw, p in poses:
        cam = template_camera(fit.landmarks3d, view_rotation(yaw, p), t)
        image, mask, vis = _render_seen(fit, photo, cam, t.size, mirror_fill, view)
        lm68 = (fit.landmarks3d @ cam[:2, :3].T + cam[:2, 3]).astype(np.float32)
        out.append(Rotated(image, mask, vis, lm68, landmarks5_from_68(lm68).astype(np.float32), fit.yaw, fit.pitch, yaw, p, t.name))
    return out


@dataclass(frozen=True)
class RenderPair:
    """One rotate-and-render training pair (Zhou et al., CVPR 2020), in the TP-GAN crop.

    Attributes:
        input: ``(128, 128, 3)`` uint8: the face rotated to ``yaw_away``, re-textured from that
            render and rotated back to the photo's pose.
        mask: ``(128, 128)`` bool: pixels the render-back covers.
        target: ``(128, 128, 3)`` uint8: the photo itself, aligned to the same crop.
        landmarks: ``(68, 2)`` float32: the photo's fitted landmarks in crop pixels.
        yaw: the photo's yaw; yaw_away: the yaw it was rotated to (degrees).
    """

    input: np.ndarray
    mask: np.ndarray
    target: np.ndarray
    landmarks: np.ndarray
    yaw: float
    yaw_away: float


def rotate_and_render(fit: Fit3D, photo: np.ndarray, face: Face, yaw_away: float, pitch_away: float = 0.0,
                      erode: int = 2, back: str = "texture") -> RenderPair:
    """Rotate-and-render: the photo's face turned to ``yaw_away``, re-textured there, turned back.

    The render at ``yaw_away`` takes its colours from the photo with no visibility test, as a
    texture baked onto vertices would (hidden points take their occluder's colour); its mask is
    eroded by ``erode`` px (silhouette pixels mix face and background); the render back at the
    photo's own pose samples that render, so it carries the defects a rotation leaves behind.

    ``back``: how the render back takes its colours from the rotated-away view — ``"texture"``
    (R&R: every point whatever the view shows at its position, an occluder's colour for a hidden
    point) or ``"mirror"`` (the view treated as a photo, as :func:`render_pose` treats one: a
    visibility test, hidden points from their mirrored point — the seams and smears of a frontal
    render of a profile).
    """
    import cv2

    t = TPGAN_128
    target, _ = align_with_landmarks(photo, face, t)
    m_crop = estimate_transform(face.landmarks, t)
    cam_src = np.vstack([m_crop[:, :2] @ fit.camera[:2], fit.camera[2:3]])
    cam_src[:2, 3] += m_crop[:, 2]
    # The rotated-away view at twice the crop's resolution, so that resampling it back costs little detail.
    away = view_rotation(*_check_pose(yaw_away, pitch_away))
    cam_away = template_camera(fit.landmarks3d, away, t, scale=2.0)
    size = 2 * t.size
    away_img, away_mask, _ = render_fit(fit, photo, cam_away, size, texture=(photo, fit.camera))
    if erode > 0:
        away_mask = cv2.erode(away_mask.astype(np.uint8), np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)) > 0
    # The eroded mask travels as a fourth channel: a pixel carried back from off the rotated
    # view's face has no colour to bring.
    away4 = np.dstack([away_img * away_mask[..., None], away_mask.astype(np.uint8) * 255])
    if back == "texture":
        back4, mask, _ = render_fit(fit, photo, cam_src, t.size, texture=(away4, cam_away))
    elif back == "mirror":
        seen_from_away = replace(fit, camera=cam_away, rotation=away, image_size=(size, size))
        back4, mask, _ = render_fit(seen_from_away, away4, cam_src, t.size, mirror_fill=True)
    else:
        raise ShapeError(f"back must be 'texture' or 'mirror', got {back!r}")
    mask = mask & (back4[..., 3] > 127)
    back = back4[..., :3] * mask[..., None]
    lm = (fit.landmarks3d @ cam_src[:2, :3].T + cam_src[:2, 3]).astype(np.float32)
    return RenderPair(back.astype(np.uint8), mask, target, lm, fit.yaw, float(yaw_away))


#: What :func:`rotate` can use: ``"3d"`` — the 3D fit and render (no learned network);
#: ``"refined"`` — that render in the TP-GAN crop, then a learned refiner
#: (:mod:`pifr.refinement`); ``"auto"`` — ``"refined"`` when a refiner is installed (or
#: ``weights=`` is given), else ``"3d"``.
ROTATE_METHODS = ("auto", "refined", "3d")


def _fit_one(img: ImageLike, face: Optional[Face], detector: Optional[str], device: Any, name: str) -> Tuple[np.ndarray, Fit3D]:
    from .detection import detect_one

    arr = load_image(img)
    f = face if face is not None else detect_one(arr, detector=detector, yaw=False, device=device, purpose=" to rotate")
    return arr, fit_faces(arr, [f], device=device, names=[name])[0]


def warp_rotated(r: Rotated, template: Union[str, AlignmentTemplate]) -> Rotated:
    """``r`` moved into another template by the similarity between the two templates' 5 points
    (as :func:`pifr.views.to_template` moves a frontal crop); image, render, mask,
    visibility and landmarks move together. ``r`` itself when it is already there."""
    t = get_template(template)
    if t.name == r.template:
        return r
    src = get_template(r.template)
    m = template_transform(src, t)

    def warp(a: np.ndarray, nearest: bool = False) -> np.ndarray:
        return warp_to_template(a, src, t, nearest)

    lm = (r.landmarks.astype(np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)
    # Nearest for the mask: an interpolated edge would mark half-covered pixels as face.
    return replace(r, image=warp(r.image), mask=warp(r.mask.astype(np.uint8), nearest=True) > 0,
                   visibility=warp(r.visibility.astype(np.float32)), landmarks=lm,
                   landmarks5=landmarks5_from_68(lm).astype(np.float32), template=t.name,
                   render=None if r.render is None else warp(r.render))


def refine_renders(renders: Sequence[Rotated], refiner: Any, template: Union[str, AlignmentTemplate] = TPGAN_128,
                   batch_size: Optional[int] = None) -> List[Rotated]:
    """Renders in the TP-GAN crop (:func:`render_pose` with the default template) → the same
    with ``image`` = ``refiner``'s output (:class:`pifr.refinement.RenderRefiner`, batched),
    ``render`` = the unrefined render, ``method="refined"``, then moved into ``template``."""
    images = refiner.refine_rotated(list(renders), batch_size)
    return [warp_rotated(replace(r, image=im, render=r.image, method="refined"), template) for r, im in zip(renders, images)]


_Item = TypeVar("_Item")
_Render = TypeVar("_Render")
_Result = TypeVar("_Result")


def render_then_refine(items: Sequence[_Item], render: Callable[[int, _Item], _Render],
                       refine: Callable[[List[_Render]], Sequence[_Result]]) -> List[Union[_Result, PifrError]]:
    """The list form of a render → refiner step (:func:`rotate`, :func:`pifr.frontalize`): one
    result or one :class:`PifrError` per item, in order.

    ``render(i, item)`` runs for each item; a :class:`PifrError` it raises becomes that item's
    entry, so one bad photo never stops the batch. ``refine`` then runs once over all the good
    renders, in item order (it batches the refiner itself, so faces from different photos share
    forward passes), and must return one result per render. Errors that are not
    :class:`PifrError` (a missing refiner is checked before this) propagate.

    Raises:
        ShapeError: ``refine`` returned a different number of results than it was given.
    """
    out: List[Union[_Result, PifrError, None]] = [None] * len(items)
    good: List[int] = []
    renders: List[_Render] = []
    for i, item in enumerate(items):
        try:
            renders.append(render(i, item))
            good.append(i)
        except PifrError as e:
            out[i] = e
    done = list(refine(renders))
    if len(done) != len(renders):  # a silent zip would leave items without a result
        raise ShapeError(f"refine returned {len(done)} results for {len(renders)} renders")
    for i, r in zip(good, done):
        out[i] = r
    return out  # type: ignore[return-value]


def _resolve_method(method: str, weights: Any) -> str:
    from .errors import UnknownModelError

    if method not in ROTATE_METHODS:
        raise UnknownModelError(f"unknown rotation method {method!r}; available: {ROTATE_METHODS}")
    if method == "auto":
        from .refinement import refiner_available

        method = "refined" if weights is not None or refiner_available() else "3d"
        log.debug("rotate: method auto -> %s", method)
    if method == "3d" and weights is not None:
        raise UnknownModelError('method="3d" takes no weights (its 3D face ships with pifr); a refiner file needs method="refined"')
    return method


def rotate(img: Union[ImageLike, Sequence[ImageLike]], yaw: float = 0.0, pitch: float = 0.0, *, method: str = "auto",
           face: Optional[Face] = None, detector: Optional[str] = None, template: Union[str, AlignmentTemplate] = TPGAN_128,
           mirror_fill: bool = True, weights: Optional[Union[str, Path]] = None, device: Any = None,
           batch_size: int = 16) -> Union[Rotated, List[Union[Rotated, PifrError]]]:
    """The largest face in ``img`` seen from ``yaw`` / ``pitch`` degrees (0, 0 = frontal).

    Args:
        img: a photo (path, bytes, PIL, numpy RGB, tensor), or a list of them.
        yaw: target yaw in degrees, > 0 turned towards the image's right, |yaw| ≤ 90.
        pitch: target pitch in degrees, > 0 looking up, |pitch| ≤ 60.
        method: ``"3d"`` — the 3D fit and render of this module; ``"refined"`` — that render in
            the TP-GAN crop turned photo-like by a learned refiner (:mod:`pifr.refinement`), then
            moved into ``template``; ``"auto"`` (default) — ``"refined"`` when a refiner is
            installed or ``weights`` is given, else ``"3d"``. See :data:`ROTATE_METHODS`.
        face: the face to use (skips detection; single image only).
        template: output crop (default the 128×128 TP-GAN crop).
        mirror_fill: colour the sides the photo does not see from the other half of the face.
        weights: ``"refined"``: a refiner ``.safetensors`` file (default: the registered one).
        batch_size: ``"refined"``: faces per refiner forward pass.

    Returns:
        A :class:`Rotated` (``method`` says which; ``render`` holds the unrefined render when
        refined); for a list, one :class:`Rotated` or :class:`PifrError` per item (a bad photo
        never stops the batch; the refiner runs over the good ones ``batch_size`` at a time).

    Raises:
        NoFaceError, FitError, InvalidImageError, ShapeError: for a single image.
        UnknownModelError: an unknown method, or ``weights`` with ``method="3d"``.
        WeightsNotFoundError, WeightsFormatError: ``"refined"`` with no usable refiner (also for a
            list: that is not one bad image).
    """
    method = _resolve_method(method, weights)
    _check_pose(yaw, pitch)
    get_template(template)  # an unknown template fails before any work
    refiner = None
    if method == "refined":
        from .refinement import get_refiner

        refiner = get_refiner(weights, device)
    # The refiner reads the TP-GAN crop only: render there, move to the template afterwards.
    render_into = TPGAN_128 if refiner is not None else template

    def render_one(item: ImageLike, f: Optional[Face], name: str) -> Rotated:
        arr, fit = _fit_one(item, f, detector, device, name)
        return render_pose(fit, arr, yaw, pitch, template=render_into, mirror_fill=mirror_fill)

    if not isinstance(img, (list, tuple)):
        r = render_one(img, face, input_label(img, None))
        return r if refiner is None else refine_renders([r], refiner, template, batch_size)[0]
    if face is not None:
        raise ShapeError("face= applies to a single image, not a list")

    def refine(renders: List[Rotated]) -> List[Rotated]:
        return renders if refiner is None else refine_renders(renders, refiner, template, batch_size)

    return render_then_refine(img, lambda i, item: render_one(item, None, input_label(item, i)), refine)

