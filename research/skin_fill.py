"""Research: distrust render samples whose colour is far from the face's own skin.

The wedge down the nose of a profile's frontal render is background sampled where the fitted nose
passes the real silhouette (LOG: "A finer 3D fit"); a finer fit of the 68 landmarks did not
remove it. This asks whether the photo itself can say which samples are wrong: the colours of
well-seen, camera-facing points give a robust skin model (median and MAD per channel); a point
whose sample is far from it (background, a hand) counts as unseen and takes its mirrored point's
colour, when that one looks like skin. Run any script with the render patched:

    python research/skin_fill.py [--kappa 3] research/partial_turn.py --turn-to 45
    python research/skin_fill.py benchmarks/rotation.py --skip-recognition --pose-faces 0 --speed-faces 0 --fit-ids '' --grid g.jpg
"""
import runpy
import sys

import numpy as np

import pifr.rotation as R
from pifr.face3d import face_model

KAPPA = 3.0
if len(sys.argv) > 2 and sys.argv[1] == "--kappa":
    KAPPA = float(sys.argv[2])
    del sys.argv[1:3]
sys.argv = sys.argv[1:]


def _skin(colours: np.ndarray, seen: np.ndarray, facing: np.ndarray):
    """Per sample, 1 near the skin model of the well-seen camera-facing samples, → 0 far from it;
    and the model's median colour (None when too few points are well seen)."""
    ref = colours[(seen >= 0.99) & (facing >= 0.8)]
    if len(ref) < 50:
        return np.ones(len(colours), np.float32), None
    med = np.median(ref, 0)
    scale = 1.4826 * np.median(np.abs(ref - med), 0) + 8.0  # grey levels; a floor for flat-lit faces
    d2 = (((colours - med) / scale) ** 2).sum(1)
    return np.exp(-0.5 * d2 / KAPPA ** 2).astype(np.float32), med


def render_seen(fit, photo, camera, size, mirror_fill, view):
    """``pifr.rotation._render_seen`` (every render from the photo goes through it) with the skin test."""
    if not mirror_fill:
        return _original(fit, photo, camera, size, mirror_fill, view)
    model = face_model()
    tris = model.triangles
    ras = R._raster(fit, camera, size)
    m = ras.mask
    img = np.zeros((size, size, photo.shape[2]), np.float32)
    vis = np.zeros((size, size), np.float32)
    if not m.any():
        return img.astype(np.uint8), m, vis
    own = ras.interpolate_covered(np.hstack([view.proj, view.facing[:, None]]), tris)
    w_own = R._seen(view, own[:, :2], own[:, 2], own[:, 3])
    c_own = R._sample(photo, own[:, :2])
    other = ras.interpolate_covered(np.hstack([view.proj[model.mirror], view.facing[model.mirror, None]]), tris)
    w_mir = R._seen(view, other[:, :2], other[:, 2], other[:, 3])
    c_mir = R._sample(photo, other[:, :2])
    s_own, med = _skin(c_own[:, :3], w_own, own[:, 3])
    s_mir, _ = _skin(c_mir[:, :3], w_mir, other[:, 3])
    a, b = (w_own * s_own)[:, None], (w_mir * s_mir)[:, None]
    # Neither sample trusted: the skin's median colour rather than the background's.
    last = c_own if med is None or c_own.shape[1] != 3 else np.broadcast_to(med, c_own.shape)
    img[m] = a * c_own + (1 - a) * (b * c_mir + (1 - b) * last)
    vis[m] = w_own
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), m, vis


_original = R._render_seen
R._render_seen = render_seen
sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[0]).resolve().parent))
runpy.run_path(sys.argv[0], run_name="__main__")
