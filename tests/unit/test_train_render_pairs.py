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


def test_mirror_back_render_carries_mirror_fill_and_stays_aligned():
    """back="mirror": the render back treats the rotated view as a photo (visibility + mirror fill),
    so what the away view did not see is filled from the other half instead of an occluder —
    a different input from R&R's, still pixel-aligned with the photo where it saw the face."""
    from pifr.detection import locate_face
    from pifr.face3d import fit_faces
    from pifr.rotation import rotate_and_render

    img, face = locate_face(EXAMPLES / "mitchell_frontal.png")
    fit = fit_faces(img, [face])[0]
    tex = rotate_and_render(fit, img, face, 55.0, back="texture")
    mir = rotate_and_render(fit, img, face, 55.0, back="mirror")
    assert np.array_equal(tex.target, mir.target) and mir.mask.sum() > 0.8 * tex.mask.sum()
    both = tex.mask & mir.mask
    assert np.abs(tex.input[both].astype(int) - mir.input[both]).mean() > 3
    m = mir.mask & (mir.input.sum(2) > 30)
    assert np.abs(mir.input[m].astype(int) - mir.target[m]).mean() < 40
    with pytest.raises(pifr.ShapeError):
        rotate_and_render(fit, img, face, 55.0, back="unknown")


def test_subset_keeps_whole_photos_and_their_first_rotations(tmp_path):
    """``RenderPairPack.subset``: the chosen photos with at most ``per_photo`` rotations each, bytes
    unchanged, photo indices renumbered; it saves and loads as a pack."""
    import numpy as np

    from pifr.train.render_pairs import RenderPairPack, _join

    rng = np.random.default_rng(0)
    P, R = 5, 10
    tb = [bytes([i]) * (i + 1) for i in range(P)]
    ib = [bytes([100 + i]) * (i + 2) for i in range(R)]
    t, to = _join(tb)
    i_, io = _join(ib)
    photo = np.repeat(np.arange(P), 2).astype(np.int32)
    pack = RenderPairPack(t, to, rng.random((P, 68, 2)).astype(np.float32), np.arange(P, dtype=np.float32), i_, io,
                          rng.integers(0, 255, (R, 2048)).astype(np.uint8), photo, np.arange(R, dtype=np.float32),
                          np.zeros(R, np.float32), np.array([f"p{k}/x.jpg" for k in range(P)]), {"source": "test"})
    sub = pack.subset(photos=3, per_photo=1, seed=1)
    assert len(sub.yaw) == 3 and len(sub) == 3
    kept = [int(k) for k in sub.yaw]  # yaw was the photo's index
    for j in range(len(sub)):
        ph = int(sub.photo[j])
        orig = kept[ph]
        assert sub.targets[sub.target_offsets[ph]:sub.target_offsets[ph + 1]].tobytes() == tb[orig]
        first = 2 * orig  # each photo's first rotation
        assert sub.inputs[sub.input_offsets[j]:sub.input_offsets[j + 1]].tobytes() == ib[first]
        assert (sub.masks[j] == pack.masks[first]).all() and str(sub.sources[ph]) == f"p{orig}/x.jpg"
    assert sub.manifest["subset"]["of_rotations"] == R
    sub.save(tmp_path / "s.npz")
    back = RenderPairPack.load(tmp_path / "s.npz")
    assert len(back) == 3 and (back.photo == sub.photo).all()
    assert len(pack.subset()) == R  # no cut: everything
