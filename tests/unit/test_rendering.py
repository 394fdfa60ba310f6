"""pifr.rendering: the numpy z-buffer rasteriser."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.rendering import rasterize, vertex_normals

from tests.conftest import EXAMPLES


def test_rasterize_covers_a_triangle_with_exact_barycentrics():
    xy = np.array([[1.0, 1.0], [9.0, 1.0], [1.0, 9.0]])
    r = rasterize(xy, np.zeros(3), np.array([[0, 1, 2]]), (12, 12))
    # Pixel centres with x + y ≤ 10 inside [1, 9]: a right triangle of 45 pixels.
    assert r.mask.sum() == 45
    assert r.mask[1, 1] and r.mask[1, 9] and r.mask[9, 1] and not r.mask[9, 9] and not r.mask[0, 0]
    b = r.bary[5, 3]  # x=3, y=5: weights of the three corners reproduce the point
    assert np.allclose(b @ xy, [3.0, 5.0], atol=1e-5) and np.isclose(b.sum(), 1.0)


def test_rasterize_keeps_the_nearer_of_two_overlapping_triangles():
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]] * 2)
    depth = np.array([1.0, 1.0, 1.0, 5.0, 5.0, 5.0])
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    assert (rasterize(xy, depth, tris, (11, 11)).tri[rasterize(xy, depth, tris, (11, 11)).mask] == 1).all()
    assert (rasterize(xy, depth[::-1].copy(), tris, (11, 11)).tri[rasterize(xy, depth[::-1].copy(), tris, (11, 11)).mask] == 0).all()


def test_vertex_normals_of_a_plane_face_the_camera():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    n = vertex_normals(v, np.array([[0, 1, 2], [1, 3, 2]]))
    assert np.allclose(n, [0, 0, 1])
