"""pifr.detection without shared data: empty images, unknown names, estimate_yaw's errors."""
from __future__ import annotations

import numpy as np
import pytest

import pifr


def test_no_face_is_empty_list():
    assert pifr.detect(np.full((200, 200, 3), 128, np.uint8)) == []


def test_unknown_detector():
    with pytest.raises(pifr.UnknownModelError):
        pifr.detect(np.zeros((64, 64, 3), np.uint8), detector="nope")


def test_no_face_raises():
    with pytest.raises(pifr.NoFaceError):
        pifr.estimate_yaw(np.full((120, 120, 3), 90, np.uint8))
