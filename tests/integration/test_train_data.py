"""Packs and pair datasets from real CFP and LFW faces, and synthetic (rendered) packs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pifr.alignment import mirror
from pifr.train.data import Pack, PairDataset


def test_pack_round_trip_and_landmarks(small_pack):
    pack = Pack.load(small_pack)
    assert len(pack) >= 50 and pack.manifest["skipped"] <= 2
    img = pack.image(0)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    fr = pack.landmarks[pack.frontal]
    # Frontal crops put the eyes near TP-GAN's template row 41 and the mouth 48 px below.
    assert abs(np.median(fr[:, :2, 1]) - 41) < 2
    assert abs(np.median(fr[:, 3:, 1].mean(1) - fr[:, :2, 1].mean(1)) - 48) < 1
    prof = np.abs(pack.yaw[~pack.frontal])
    assert np.median(prof) > 40


def test_pairs_and_mirroring(small_pack):
    pack = Pack.load(small_pack)
    ds = PairDataset(pack, identities=range(1, 4), frontal_inputs=False)
    assert len(ds) > 0 and ds.identities == [1, 2, 3]
    for k in range(0, len(ds), 7):
        item = ds[k]
        i, t = ds.pairs[k]
        assert pack.identity[i] == pack.identity[t] and pack.frontal[t] and not pack.frontal[i]
        assert item["yaw"] >= 0 and item["input"].shape == (3, 128, 128)
        assert item["input"].min() >= -1 and item["input"].max() <= 1
    crop = np.arange(128 * 128 * 3, dtype=np.uint8).reshape(128, 128, 3)
    lm = np.array([[40, 40], [88, 41], [64, 64], [48, 89], [80, 90]], np.float32)
    c2, l2 = mirror(*mirror(crop, lm))
    assert np.array_equal(c2, crop) and np.allclose(l2, lm)
    _, lm1 = mirror(crop, lm)
    assert lm1[0, 0] < lm1[1, 0]  # index 0 stays the image-left eye


def test_synthetic_pack_gives_pixel_exact_pairs(model3d, lfw, tmp_path):
    model = model3d
    from pifr.train.data import build_synthetic_pack

    items = [(str(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg"), 1), (str(lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"), 2)]
    pack = build_synthetic_pack(items, [-60, 45], {"source": "test"}, model_path=str(model), progress=False)
    assert len(pack) == 6 and pack.frontal.sum() == 2 and set(pack.yaw.tolist()) == {0.0, -60.0, 45.0}
    ds = PairDataset(pack)
    assert len(ds) == 4  # each render paired with its own 0° render
    for i, t in ds.pairs:
        assert pack.group[i] == pack.group[t] and pack.frontal[t]
    item = ds[0]
    assert item["yaw"] > 0 and item["aligned"] == 1.0  # the -60° input was mirrored to face right; renders are pixel-aligned
    fr = pack.landmarks[pack.frontal]
    assert np.abs(fr[:, :2, 1].mean(1) - 41).max() < 2  # the 0° renders sit on the TP-GAN template

    # target="photo": the frontal is the aligned photo — the same face as the 0° render (whose
    # texture came from it; the render has the reference head's shape, so only roughly aligned)
    # with real surroundings where the render is black.
    photo = build_synthetic_pack(items, [-60, 45], {"source": "test"}, model_path=str(model), progress=False, target="photo")
    assert photo.manifest["target"] == "photo" and len(photo) == 6
    face = (slice(40, 100), slice(36, 92))
    fronts = np.flatnonzero(pack.frontal)
    for k, other in zip(fronts, fronts[::-1]):
        r = pack.image(k).astype(np.float32)
        d = lambda j: np.abs(r[face] - photo.image(j).astype(np.float32)[face]).mean()  # noqa: E731
        assert d(k) < d(other), "the photo target must show the render's face"
        assert (photo.image(k).max(2) < 16).mean() < 0.5 * (r.max(2) < 16).mean(), "the photo target keeps its surroundings"
    assert np.allclose(photo.landmarks[fronts][:, :2, 1], 41, atol=2)  # eyes on the template row, like the renders
    assert np.array_equal(photo.image(1), pack.image(1))  # the renders themselves do not change
    with pytest.raises(ValueError):
        build_synthetic_pack(items, [45], {}, model_path=str(model), progress=False, target="mesh")

    # background="fill": the rendered inputs lose their black surround, the targets do not change.
    filled = build_synthetic_pack(items, [-60, 45], {}, model_path=str(model), progress=False, target="photo", background="fill")
    dark = lambda im: (im.max(2) < 16).mean()  # noqa: E731
    for k in np.flatnonzero(~pack.frontal):
        assert dark(filled.image(k)) < 0.3 * dark(pack.image(k))
    for k in fronts:
        assert np.array_equal(filled.image(k), photo.image(k))

    # landmarks="detected": each render is cropped by the detector's landmarks found on it, as a
    # real profile is at inference — the projected ones put the turned nose further out.
    det = build_synthetic_pack(items, [-60, 45], {}, model_path=str(model), progress=False, target="photo",
                               background="fill", landmarks="detected")
    assert det.manifest["landmarks"] == "detected" and len(det) == 6
    turned = np.flatnonzero(~det.frontal)
    assert np.abs(det.landmarks[turned][:, :2, 1].mean(1) - 41).max() < 3  # eyes on the template row
    nose_out = lambda p: np.mean([abs(p.landmarks[k][2, 0] - p.landmarks[k][:2, 0].mean()) for k in turned])  # noqa: E731
    assert nose_out(det) < nose_out(filled) - 3
    with pytest.raises(ValueError):
        build_synthetic_pack(items, [45], {}, model_path=str(model), progress=False, landmarks="guessed")

    # depth_scales: the k-th photo is rendered on the k-th head shape in turn; the first keeps the
    # reference head (its renders are unchanged), the second's turned nose sticks out further.
    deep = build_synthetic_pack(items, [-60, 45], {}, model_path=str(model), progress=False, depth_scales=(1.0, 1.3))
    assert deep.manifest["depth_scales"] == [1.0, 1.3] and len(deep) == 6
    first, second = (np.flatnonzero((deep.group == g) & ~deep.frontal) for g in (0, 1))
    assert all(np.array_equal(deep.image(k), pack.image(k)) for k in first)
    assert all(np.abs(deep.image(k).astype(int) - pack.image(k)).mean() > 2 for k in second)
    out = lambda p, k: abs(p.landmarks[k][2, 0] - p.landmarks[k][:2, 0].mean())  # noqa: E731
    assert np.mean([out(deep, k) - out(pack, k) for k in second]) > 2
    with pytest.raises(ValueError):
        build_synthetic_pack(items, [45], {}, model_path=str(model), progress=False, depth_scales=(0.0,))


def test_synthetic_pack_skips_turned_sources_and_lfw_sources_leave_out_validation_people(model3d, lfw, cfp):
    model = model3d
    import argparse

    from pifr.train.data import LFW_IDENTITY_BASE, build_synthetic_pack
    from pifr.train.pack import lfw_sources

    # A real profile (CFP 001, ~66° by 3DDFA) is no source for renders; a frontal LFW photo is.
    items = [(str(cfp / "Data" / "Images" / "001" / "profile" / "01.jpg"), 1),
             (str(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg"), 2)]
    pack = build_synthetic_pack(items, [45], {}, model_path=str(model), progress=False, max_source_yaw=15)
    assert set(pack.identity.tolist()) == {2} and pack.manifest["skipped"] == 1
    assert "source yaw" in pack.manifest["skipped_examples"][0] and pack.manifest["max_source_yaw"] == 15

    args = argparse.Namespace(render_lfw=str(lfw), exclude_cfp=str(cfp), lfw_people=300, identities="1-350")
    chosen, manifest = lfw_sources(args, range(1, 351))
    again, _ = lfw_sources(args, range(1, 351))
    assert len(chosen) == 300 and chosen == again  # a seeded, repeatable choice
    names = {Path(p).parent.name for p, _ in chosen}
    assert "Tony_Blair" in manifest["excluded_cfp_people"] and not names & set(manifest["excluded_cfp_people"])
    assert all(i >= LFW_IDENTITY_BASE for _, i in chosen) and len({i for _, i in chosen}) == 300
