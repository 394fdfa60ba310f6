"""Yaw estimates on real CMU and CFP faces."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.eval.datasets import cfp_images


def _yaws(cmu, pose, method, limit=12):
    files = sorted(cmu.glob(f"*/*_{pose}_*_open.pgm"))[:limit]
    out = []
    for f in files:
        faces = pifr.detect(f, yaw=False)
        if faces:
            out.append(pifr.estimate_yaw(f, faces[0], method=method))
    return np.array(out)


@pytest.mark.parametrize("method", ["3ddfa", "landmarks"])
def test_cmu_sign_and_magnitude(cmu, method):
    left, right, straight = (_yaws(cmu, p, method) for p in ("left", "right", "straight"))
    assert len(left) >= 8 and len(right) >= 6 and len(straight) >= 8
    # CMU "left": the subject looks to their left, i.e. towards the image's right → positive yaw.
    assert np.mean(left > 0) >= 0.9 and np.mean(right < 0) >= 0.9
    assert np.median(left) > 25 and np.median(right) < -25
    assert np.median(np.abs(straight)) < 10
    if method == "3ddfa":
        assert np.mean(left > 20) >= 0.9 and np.mean(right < -20) >= 0.9
        assert 40 < np.median(left) < 90 and -90 < np.median(right) < -40


def test_cfp_separates_frontal_from_profile(cfp):
    ims = cfp_images(cfp, range(351, 356))
    fr = [abs(pifr.estimate_yaw(im.path)) for im in ims if im.pose == "frontal"]
    pr = [abs(pifr.estimate_yaw(im.path)) for im in ims if im.pose == "profile"]
    assert np.mean(np.array(fr) < 30) >= 0.95
    assert np.mean(np.array(pr) > 40) >= 0.9
