"""Pooling several faces of one person into one probe."""
from __future__ import annotations

import numpy as np
import pytest

from pifr.errors import ShapeError
from pifr.pooling import pool_faces


def _unit(*v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_frontal_faces_weigh_more_than_profiles():
    front, profile = _unit(1, 0, 0), _unit(0, 1, 0)
    p = pool_faces(np.stack([front, profile]), [0.0, 80.0])
    assert abs(np.linalg.norm(p) - 1) < 1e-6
    assert p @ front > p @ profile > 0  # cos 80° ≈ 0.17: the profile still counts, less
    even = pool_faces(np.stack([front, profile]), [30.0, -30.0])  # the side of the turn does not matter
    assert even @ front == pytest.approx(even @ profile, abs=1e-6)
    assert pool_faces(np.stack([front, profile])) @ front == pytest.approx(0.7071, abs=1e-3)  # unknown yaw: frontal
    np.testing.assert_array_equal(pool_faces(front[None]), front)


def test_bad_shapes_are_typed_errors():
    with pytest.raises(ShapeError):
        pool_faces(np.zeros((0, 128), np.float32))
    with pytest.raises(ShapeError):
        pool_faces(np.zeros(128, np.float32))
    with pytest.raises(ShapeError, match="yaws"):
        pool_faces(np.eye(3, dtype=np.float32), [0.0])
