"""research/ diagnostics: the pose map on the embedding, the turned gallery, the output mark."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_pose_residual_starts_as_raw_and_learns_a_pose_offset():
    """research/embedding_residual.py's map: exactly the raw embedding before training (its epoch 0
    is raw), and on synthetic embeddings where turning a face adds a fixed offset it learns to
    take the offset back off profiles while leaving frontals near where they were."""
    import torch
    import torch.nn.functional as F

    from research.embedding_residual import PoseResidual

    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(40, 16, generator=g), dim=1)
    offset = F.normalize(torch.randn(16, generator=g), dim=0)
    ids = torch.arange(40).repeat_interleave(10)
    yaw = torch.where(torch.arange(400) % 2 == 0, torch.tensor(0.0), torch.tensor(75.0))
    e = F.normalize(centres[ids] + 0.05 * torch.randn(400, 16, generator=g) + 1.2 * (yaw > 0).float()[:, None] * offset, dim=1)
    m = PoseResidual(16, 32)
    with torch.no_grad():
        assert torch.allclose(m(e, yaw), e, atol=1e-6)
    prof = yaw > 0
    before = float((e[prof] * centres[ids[prof]]).sum(1).mean())
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(300):
        loss = F.cross_entropy(m(e, yaw) @ centres.T / 0.05, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = m(e, yaw)
    after = float((out[prof] * centres[ids[prof]]).sum(1).mean())
    assert after > before + 0.2, (before, after)
    assert float((out[~prof] * centres[ids[~prof]]).sum(1).mean()) > 0.9


def test_people_curve_trains_on_nested_sets_and_refuses_validation_people(monkeypatch, tmp_path):
    """research/embedding_residual.py --people: one map per number of training people (the first N
    identity numbers), each scored on the validation pack — a map learnt from more people of the
    same pose offset must do at least as well — with a plot; and a training pack that holds a
    validation person, or more people asked for than the packs hold, stops the run before anything
    is embedded."""
    import torch.nn.functional as F
    import torch

    from research import embedding_residual as er

    g = torch.Generator().manual_seed(0)
    offset = F.normalize(torch.randn(16, generator=g), dim=0)

    def people(first, n, per=6):
        ids = np.repeat(np.arange(first, first + n), per)
        centres = F.normalize(torch.randn(n, 16, generator=g), dim=1)
        front = np.tile(np.arange(per) < 2, n)
        yaw = np.where(front, 0.0, 75.0).astype(np.float32)
        e = F.normalize(centres.repeat_interleave(per, 0) + 0.3 * torch.randn(n * per, 16, generator=g)
                        + 1.2 * torch.from_numpy(~front).float()[:, None] * offset, dim=1)
        return e.numpy(), yaw, ids, front

    packs = {"train": people(1, 60), "val": people(351, 50), "leak": people(340, 20)}
    embedded = []
    monkeypatch.setattr(er, "pack_embeddings", lambda path, name, identities=None: embedded.append(path) or packs[path])
    monkeypatch.setattr(er, "pack_labels", lambda path, identities=None: packs[path][2:])
    monkeypatch.setattr(er, "weights_sha", lambda names: {n: "none" for n in names})

    def run(packs_arg, *extra):
        monkeypatch.setattr(sys, "argv", ["embedding_residual.py", "--embedders", "synthetic", "--packs", packs_arg,
                                          "--val-pack", "val", "--seeds", "1", "--epochs", "20", "--hidden", "32",
                                          "--lr", "3e-3", "--out", str(tmp_path), *extra])
        er.main()
        return json.loads((tmp_path / "embedding_residual_packs.json").read_text())["results"]["synthetic"]

    res = run("train", "--people", "3", "60", "--plot", str(tmp_path / "people.png"))
    assert sorted(res["by_people"], key=int) == ["3", "60"]
    best = {int(n): r["curve"][str(r["best_epoch"])] for n, r in res["by_people"].items()}
    assert best[60] > res["raw"] + 0.05 and best[60] >= best[3], (res["raw"], best)
    assert (tmp_path / "people.png").stat().st_size > 10_000
    embedded.clear()
    with pytest.raises(SystemExit, match="overlap"):
        run("train,leak")
    with pytest.raises(SystemExit, match="--people 61: the packs hold 60 people"):
        run("train", "--people", "61")
    assert embedded == []


def test_lfw_people_join_the_map_and_no_cfp_person_comes_from_lfw(monkeypatch, tmp_path, shared):
    """research/embedding_residual.py --lfw: LFW's people with 2+ photos (at most 20 each) join CFP
    001-350 as classes of their own, those with a photo within 15° of frontal; no LFW folder of a
    CFP person is read (351-400 are where the epoch is chosen). Embeddings are stand-ins here."""
    from collections import Counter

    from research import embedding_residual as er

    from pifr.eval.datasets import cfp_names

    rng = np.random.default_rng(0)
    yaws = {}

    def fake_embed(paths, name, detector, with_yaw=False):
        paths = [str(p) for p in paths]
        yaws.update({p: float(rng.uniform(-40, 40)) for p in paths})
        return {p: _unit(rng.normal(size=8)) for p in paths}, {p: yaws[p] for p in paths}

    monkeypatch.setattr(er, "embed_paths", fake_embed)
    monkeypatch.setattr(er, "weights_sha", lambda names: {n: "none" for n in names})
    monkeypatch.setattr(sys, "argv", ["embedding_residual.py", "--lfw", "--embedders", "synthetic", "--epochs", "1",
                                      "--eval-every", "1", "--seeds", "1", "--shared", str(shared), "--out", str(tmp_path)])
    er.main()
    rec = json.loads((tmp_path / "embedding_residual.json").read_text())
    in_lfw = [p for p in yaws if Path(p).parent.parent == shared / "data" / "lfw"]
    lfw = Counter(Path(p).parent.name for p in in_lfw)
    assert len(lfw) > 1000 and 2 <= min(lfw.values()) and max(lfw.values()) <= er.LFW_MAX_PHOTOS
    assert not set(lfw) & set(cfp_names(shared / "data" / "cfp").values())
    with_frontal = {Path(p).parent.name for p in in_lfw if abs(yaws[p]) <= er.LFW_FRONTAL}
    assert rec["results"]["synthetic"]["train_identities"] == 350 + len(with_frontal) < 350 + len(lfw)
    assert "LFW" in rec["split"] and f"{len(lfw)} people" in rec["data"]


def test_turned_gallery_scores_the_render_at_the_probes_pose_and_falls_back_to_raw(tmp_path):
    """research/gallery_pose_synthesis.py: a probe above the yaw threshold is scored against the
    gallery face's render at its own 15° bucket; a missing render (no face found in it) leaves the
    raw score; render embeddings survive the cache round trip, missing ones included."""
    from research.gallery_pose_synthesis import Renders, bucket, score_fn

    assert [bucket(y) for y in (0.0, 7.0, 52.0, 53.0, 95.0, -61.0, -20.0)] == [15, 15, 45, 60, 90, -60, -15]
    raw = {"p": _unit([1, 0, 0]), "q": _unit([1, 0, 0]), "g": _unit([0.6, 0.8, 0])}
    yaws = {"p": 58.0, "q": 20.0}
    rend = {("e", "g", 60): _unit([0, 0, 1]), ("e", "g", -60): _unit([1, 0, 0])}
    s = score_fn(raw, yaws, rend, "e", 30.0, 1.0)
    assert np.isclose(s("p", "g"), 0.0)  # the +60° render, not the −60° one (cos 1) nor raw (0.6)
    assert np.isclose(s("q", "g"), 0.6)  # below the threshold: raw
    assert np.isclose(score_fn(raw, yaws, rend, "e", 30.0, 0.25)("p", "g"), 0.75 * 0.6)
    assert np.isclose(score_fn(raw, {"p": 80.0}, rend, "e", 30.0, 1.0)("p", "g"), 0.6)  # no 75° render: raw
    r = Renders.__new__(Renders)
    r.embs, r.vec = {"e": SimpleNamespace(dim=3)}, {**rend, ("e", "g", 90): None}
    r.save(tmp_path / "c.npz")
    back = Renders.__new__(Renders)
    back.embs, back.vec = r.embs, {}
    back.load(tmp_path / "c.npz")
    assert back.vec[("e", "g", 90)] is None and np.allclose(back.vec[("e", "g", 60)], rend[("e", "g", 60)])


def test_cohort_znorm_uses_the_probes_pose_bucket_and_falls_back_to_its_side():
    """Gallery-side Z-norm: mean and spread of a gallery vector's scores against cohort profiles of
    the probe's yaw bucket; a bucket with too few members borrows every cohort face of its sign."""
    from research.gallery_pose_synthesis import Cohort

    rng = np.random.default_rng(0)
    emb, yaws = {}, {}
    for i in range(60):  # 30 faces at +60°, 30 at −75°
        emb[f"c{i}"] = _unit(rng.normal(size=8))
        yaws[f"c{i}"] = 60.0 if i < 30 else -75.0
    emb["none"], yaws["none"] = None, 60.0
    c = Cohort(emb, yaws)
    g = _unit(rng.normal(size=8))
    at60 = np.stack([emb[f"c{i}"] for i in range(30)]) @ g
    assert np.isclose(c.z(float(at60.mean()), g, "g", 60), 0.0, atol=1e-5)
    assert np.isclose(c.z(float(at60.mean() + at60.std()), g, "g", 60), 1.0, atol=1e-3)
    assert len(c.rows(45)) == 30 and len(c.rows(-15)) == 30  # +45: empty bucket → the +60 faces


def test_output_mark_finds_a_planted_mark_and_nothing_else():
    """research/output_mark.py's mask: a green square planted at one place in every output is found
    exactly; faces with no shared mark (per-image noise) give next to nothing."""
    import torch

    from research.output_mark import mark_mask

    g = torch.Generator().manual_seed(0)
    faces = torch.rand(40, 3, 64, 64, generator=g) * 2 - 1
    assert mark_mask(faces).sum() <= 20  # a 3-sigma tail: ~0.1 % of 4,096 pixels by chance
    marked = faces.clone()
    marked[:, 1, 10:18, 40:46], marked[:, 0, 10:18, 40:46], marked[:, 2, 10:18, 40:46] = 1.0, -1.0, -1.0
    m = mark_mask(marked)
    assert m[10:18, 40:46].all() and m.sum() == 48
