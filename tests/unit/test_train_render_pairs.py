"""pifr.train.render_pairs: rotate-and-render pair packs."""
from __future__ import annotations

import numpy as np
import pytest

import pifr

from tests.conftest import EXAMPLES


def test_render_pair_pack_builds_saves_and_skips_bad_photos(tmp_path):
    from pifr.train.render_pairs import RenderPairPack, build

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    srcs = [(EXAMPLES / "mitchell_frontal.png", "mitchell_frontal.png"), (bad, "broken.jpg"),
            (EXAMPLES / "night_turned.png", "night_turned.png")]
    pack = build(srcs, rotations=2, seed=1)
    assert pack.manifest["photos"] == 2 and len(pack) == 4 and pack.manifest["skipped"] == {"InvalidImageError": 1}
    pack.save(tmp_path / "rr.npz")
    back = RenderPairPack.load(tmp_path / "rr.npz")
    assert list(back.sources) == ["mitchell_frontal.png", "night_turned.png"]
    inp, mask, tgt, lm = back.pair(3)
    assert inp.shape == tgt.shape == (128, 128, 3) and mask.shape == (128, 128) and lm.shape == (68, 2)
    assert back.photo[3] == 1 and abs(back.yaw_away[3] - back.yaw[1]) >= 15
    # The JPEG round trip keeps the pair aligned: the input matches its target where it has colour.
    m = mask & (inp.sum(2) > 30)
    assert np.abs(inp[m].astype(int) - tgt[m]).mean() < 40
