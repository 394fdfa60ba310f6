"""pifr.eval.datasets without the data: where the shared root is looked for."""
from __future__ import annotations

import numpy as np

import pifr


def test_shared_root_defaults_to_the_folder_beside_the_repository(monkeypatch):
    from tests.conftest import ROOT

    from pifr.eval.datasets import shared_root

    monkeypatch.delenv("PIFR_SHARED", raising=False)
    assert shared_root() == ROOT.parent / "shared"
    monkeypatch.setenv("PIFR_SHARED", "/elsewhere")
    assert str(shared_root()) == "/elsewhere" and str(shared_root("/given")) == "/given"


def test_cfp_marks_land_on_the_half_they_mark():
    from pifr.eval.datasets import CFP_TO_68, cfp_landmarks68

    fid = np.arange(60, dtype=float).reshape(30, 2)  # ear (0) left of the chin (8): the subject's right half
    right = cfp_landmarks68(fid)
    assert np.isfinite(right[:, 0]).sum() == len(CFP_TO_68)
    np.testing.assert_array_equal(right[36], fid[12])
    np.testing.assert_array_equal(right[30], fid[21])
    fid[:, 0] *= -1  # mirrored photo: the ear now right of the chin, the left half is marked
    left = cfp_landmarks68(fid)
    np.testing.assert_array_equal(left[45], fid[12])
    assert np.isnan(left[36]).all() and np.isnan(left[0]).all()
