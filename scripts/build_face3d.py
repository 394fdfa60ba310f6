"""Build ``weights/face3d_bfm.safetensors``, the 3D face that ``pifr.face3d`` fits and renders.

Reads the BFM-2009 mean shape, its texture coordinates, 3DDFA_V2's vertex subset and the
68-landmark basis (``$PIFR_SHARED/models/bfm_3ddfa``, see the README there) and writes:

* ``vertices`` (N, 3) float32 — the mean shape (+ mean expression) resampled on a regular grid
  in texture space (``--grid`` columns), so the mesh is evenly dense and left/right symmetric:
  the mirror of grid node (row, col) is (row, G−1−col), an exact symmetry of the texture map;
* ``triangles`` (T, 3) int32 — two per grid cell whose four corners lie on the face;
* ``mirror`` (N,) int32 — each vertex's mirror vertex;
* ``landmarks_mean`` (68, 3), ``w_shp`` (204, 40), ``w_exp`` (204, 10) — the 68 landmarks of the
  mean face and their shape/expression basis in 3DDFA_V2's parameter space.

Model units are BFM's (micrometres); x to the image's right, y up, z towards the camera.

    python scripts/build_face3d.py [--grid 96] [--out weights/face3d_bfm.safetensors]
"""
from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(src: Path, grid: int) -> dict:
    import scipy.io as sio

    from pifr.rendering import rasterize

    u = (np.load(src / "u_shp.npy") + np.load(src / "u_exp.npy")).reshape(-1, 3).astype(np.float64)
    keep = np.load(src / "indices_v2.npy")
    with open(src / "tri_v2.pkl", "rb") as f:  # a plain (3, T) int array, from the maintainers' copy
        tri_v2 = np.asarray(pickle.load(f)).T.astype(np.int64)
    uv = sio.loadmat(str(src / "BFM_UV.mat"))["UV"][keep].astype(np.float64)
    verts = u[keep]

    # Grid nodes sit on pixel centres of a (rows, grid) raster of texture space; the texture
    # map's u is exactly mirror-symmetric (u -> 1 - u), so column c mirrors column grid-1-c.
    v_lo = uv[:, 1].min()
    step = 1.0 / (grid - 1)
    rows = int(np.ceil((1.0 - v_lo) / step)) + 1
    xy = np.stack([uv[:, 0] / step, (1.0 - uv[:, 1]) / step], 1)  # row 0 = top of the texture map
    ras = rasterize(xy, np.zeros(len(xy)), tri_v2, (rows, grid))
    pos = ras.interpolate(verts.astype(np.float32), tri_v2)
    valid = ras.mask
    # The BFM mesh is open between the lips: close the hole (a render would show the background
    # through the mouth) with positions diffused in from its rim (a discrete harmonic fill).
    from scipy.ndimage import binary_fill_holes

    hole = binary_fill_holes(valid) & ~valid
    for _ in range(400):
        pad = np.pad(pos, ((1, 1), (1, 1), (0, 0)), mode="edge")
        avg = (pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]) / 4
        pos[hole] = avg[hole]
    valid = valid | hole
    # Keep only nodes whose mirror is valid too, so the mirror map is total.
    valid &= valid[:, ::-1]
    index = np.full(valid.shape, -1, np.int64)
    index[valid] = np.arange(valid.sum())
    vertices = pos[valid].astype(np.float32)
    r, c = np.nonzero(valid)
    mirror = index[r, grid - 1 - c].astype(np.int32)

    a, b = index[:-1, :-1], index[:-1, 1:]
    cc, d = index[1:, :-1], index[1:, 1:]
    full = (a >= 0) & (b >= 0) & (cc >= 0) & (d >= 0)
    t1 = np.stack([a[full], cc[full], b[full]], 1)
    t2 = np.stack([b[full], cc[full], d[full]], 1)
    triangles = np.concatenate([t1, t2]).astype(np.int32)

    kp = np.load(src / "keypoints_sim.npy").astype(np.int64)
    lm_mean = u.reshape(-1)[kp].reshape(68, 3).astype(np.float32)
    return {
        "vertices": vertices,
        "triangles": triangles,
        "mirror": mirror,
        "landmarks_mean": lm_mean,
        "w_shp": np.load(src / "w_shp_base.npy").astype(np.float32),
        "w_exp": np.load(src / "w_exp_base.npy").astype(np.float32),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=None, help="folder of the BFM files (default: $PIFR_SHARED/models/bfm_3ddfa)")
    ap.add_argument("--grid", type=int, default=96, help="grid columns across the texture map")
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / "face3d_bfm.safetensors")
    args = ap.parse_args(argv)
    import os

    src = args.src or Path(os.environ.get("PIFR_SHARED", ROOT.parent / "shared")) / "models" / "bfm_3ddfa"
    from safetensors.numpy import save_file

    arrays = build(src, args.grid)
    save_file(arrays, str(args.out), metadata={"grid": str(args.grid), "source": "BFM-2009 via 3DDFA/3DDFA_V2; academic use"})
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {len(arrays['vertices'])} vertices, {len(arrays['triangles'])} triangles, "
          f"{args.out.stat().st_size / 1e6:.2f} MB, sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
