"""A small z-buffer rasteriser for triangle meshes, in numpy (CPU, no GPU or OpenGL needed).

It returns, per output pixel, which triangle is nearest the camera and the pixel centre's
barycentric coordinates in it. Everything else a render needs (3D position, normal, source
texture coordinates, a mirrored surface point) is interpolated from those, so one raster pass
serves colour, visibility and masks, and the colour itself is sampled from the full-resolution
photo with one ``cv2.remap`` (bilinear) rather than baked into per-vertex colours.

Conventions: pixel ``(x, y)`` has its centre at integer coordinates; depth is larger nearer the
camera (orthographic views, as 3DDFA_V2's camera is).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

#: Triangles whose bounding box is wider than this (px) are skipped: they only occur for
#: degenerate, edge-on triangles of a mesh seen at a grazing angle, whose pixels belong to a
#: nearer face anyway.
MAX_TRIANGLE_PX = 24


@dataclass(frozen=True)
class Raster:
    """Result of :func:`rasterize` for an ``(H, W)`` image.

    Attributes:
        tri: ``(H, W)`` int32 index of the nearest triangle per pixel, −1 where none covers it.
        bary: ``(H, W, 3)`` float32 barycentric coordinates of the pixel centre in ``tri`` (0 where none).
        depth: ``(H, W)`` float32 interpolated depth (−inf where none; larger = nearer).
    """

    tri: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool: pixels covered by the mesh."""
        return self.tri >= 0

    def interpolate_covered(self, values: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """Barycentric interpolation of per-vertex ``values`` ``(N, C)`` at the covered pixels, in
        row-major order of :attr:`mask` → ``(P, C)``."""
        m = self.mask
        corners = triangles[self.tri[m]]  # (P, 3)
        b = self.bary[m]
        return (values[corners[:, 0]] * b[:, :1] + values[corners[:, 1]] * b[:, 1:2]
                + values[corners[:, 2]] * b[:, 2:3])

    def interpolate(self, values: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """:meth:`interpolate_covered` as an image: ``(H, W, C)`` float32, zeros where no triangle
        covers the pixel."""
        h, w = self.tri.shape
        out = np.zeros((h, w, values.shape[1]), np.float32)
        out[self.mask] = self.interpolate_covered(values, triangles)
        return out


def rasterize(xy: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size: Tuple[int, int],
              front: Optional[float] = None) -> Raster:
    """Z-buffer rasterisation of a triangle mesh.

    Args:
        xy: ``(N, 2)`` vertex positions in output pixels (x right, y down).
        depth: ``(N,)`` vertex depth, larger = nearer the camera.
        triangles: ``(T, 3)`` int vertex indices.
        size: output ``(H, W)``.
        front: the sign of the projected (signed) area of triangles that face the camera; those of
            the other sign are culled. ``None`` keeps both. For a camera whose rows are image x,
            image y and depth, it is the sign of the rows' determinant (:func:`front_sign`).

    Returns:
        :class:`Raster` with the nearest triangle and barycentrics per pixel.
    """
    h, w = int(size[0]), int(size[1])
    xy = np.asarray(xy, np.float64)
    depth = np.asarray(depth, np.float64)
    tri = np.asarray(triangles, np.int64)
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    lo = np.ceil(np.minimum(np.minimum(a, b), c)).astype(np.int64)  # first pixel centre ≥ min
    hi = np.floor(np.maximum(np.maximum(a, b), c)).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi[:, 0] = np.minimum(hi[:, 0], w - 1)
    hi[:, 1] = np.minimum(hi[:, 1], h - 1)
    span = hi - lo + 1
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = (span[:, 0] > 0) & (span[:, 1] > 0) & (np.abs(area) > 1e-12) & (span.max(1) <= MAX_TRIANGLE_PX)
    if front is not None:
        keep &= np.sign(area) == np.sign(front)
    idx = np.nonzero(keep)[0]

    # Barycentric weights and depth are affine in the pixel position: w = A·x + B·y + C per triangle.
    ar = area[idx]
    ax, ay, bx, by, cx, cy = a[idx, 0], a[idx, 1], b[idx, 0], b[idx, 1], c[idx, 0], c[idx, 1]
    coef0 = np.stack([(by - cy) / ar, (cx - bx) / ar, (bx * cy - by * cx) / ar], 1)
    coef1 = np.stack([(cy - ay) / ar, (ax - cx) / ar, (cx * ay - cy * ax) / ar], 1)
    tz = depth[tri[idx]]  # (S, 3)
    pix_parts, t_parts, w_parts = [], [], []
    k_of = span[idx].max(1)
    # Triangles are bucketed by bounding-box size, so each bucket is one vectorised k×k sweep.
    for k in np.unique(k_of):
        j = np.nonzero(k_of == k)[0]
        oy, ox = np.divmod(np.arange(k * k), k)
        px = lo[idx[j], 0][:, None] + ox[None]  # (S, k*k)
        py = lo[idx[j], 1][:, None] + oy[None]
        c0, c1 = coef0[j], coef1[j]
        w0 = c0[:, :1] * px + c0[:, 1:2] * py + c0[:, 2:]
        w1 = c1[:, :1] * px + c1[:, 1:2] * py + c1[:, 2:]
        inside = (w0 >= -1e-7) & (w1 >= -1e-7) & (w0 + w1 <= 1 + 1e-7)
        inside &= (px <= hi[idx[j], 0][:, None]) & (py <= hi[idx[j], 1][:, None])
        s_i, p_i = np.nonzero(inside)
        if len(s_i) == 0:
            continue
        pix_parts.append(py[s_i, p_i] * w + px[s_i, p_i])
        t_parts.append(j[s_i])
        w_parts.append(np.stack([w0[s_i, p_i], w1[s_i, p_i]], 1))
    out_tri = np.full(h * w, -1, np.int32)
    out_bary = np.zeros((h * w, 3), np.float32)
    out_depth = np.full(h * w, -np.inf, np.float32)
    if pix_parts:
        pix = np.concatenate(pix_parts)
        tj = np.concatenate(t_parts)
        w01 = np.concatenate(w_parts)
        bw = np.column_stack([w01, 1.0 - w01.sum(1)])
        z = (bw * tz[tj]).sum(1)
        # Nearest first within each pixel, then the first row of each pixel wins: a float sort on
        # depth, then a stable sort on the pixel index (a radix sort for 16-bit indices; one
        # lexsort on both keys costs several times more).
        order = np.argsort(-z, kind="stable")
        key = pix[order].astype(np.uint16 if h * w <= 1 << 16 else np.int64)
        order = order[np.argsort(key, kind="stable")]
        pix_s = pix[order]
        first = np.ones(len(order), bool)
        first[1:] = pix_s[1:] != pix_s[:-1]
        win = order[first]
        out_tri[pix[win]] = idx[tj[win]]
        out_bary[pix[win]] = bw[win]
        out_depth[pix[win]] = z[win]
    return Raster(out_tri.reshape(h, w), out_bary.reshape(h, w, 3), out_depth.reshape(h, w))


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit normals: the area-weighted mean of the adjacent triangles' normals."""
    v = np.asarray(vertices, np.float64)
    t = np.asarray(triangles, np.int64)
    fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    idx = t.ravel()
    rep = np.repeat(fn, 3, axis=0)
    n = np.stack([np.bincount(idx, rep[:, i], minlength=len(v)) for i in range(3)], 1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return n.astype(np.float32)


def front_sign(camera: np.ndarray) -> float:
    """The signed-area sign of camera-facing triangles under ``camera`` (3×4 or 3×3; rows image x,
    image y, depth towards the camera): the projected area of a triangle with outward normal n has
    the sign of det(rows) · (n · depth row)."""
    return float(np.sign(np.linalg.det(np.asarray(camera, np.float64)[:3, :3])))
