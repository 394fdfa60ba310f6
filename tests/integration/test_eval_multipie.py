"""The Multi-PIE reader and benchmark harness on Multi-PIE-shaped trees built from real CFP faces."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from pifr.eval.multipie import multipie_pairs, multipie_split, scan_multipie
from pifr.train.data import multipie_items


def test_multipie_reader_on_a_multipie_shaped_tree(cfp, tmp_path):
    """A Multi-PIE-shaped tree built from real CFP images: frontals as camera 05_1, profiles as ±90."""
    from pifr.eval.datasets import cfp_images

    for subj in range(1, 5):
        ims = cfp_images(cfp, range(subj, subj + 1))
        fr = [im for im in ims if im.pose == "frontal"]
        pr = [im for im in ims if im.pose == "profile"]
        for cam, src, ill in (("05_1", fr[0], 7), ("05_1", fr[1], 0), ("11_0", pr[0], 7), ("24_0", pr[1], 7), ("08_1", pr[2], 7)):
            d = tmp_path / "session01" / "multiview" / f"{subj:03d}" / "01" / cam
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(src.path, d / f"{subj:03d}_01_01_{cam.replace('_', '')}_{ill:02d}.png")
    imgs = scan_multipie(tmp_path)
    assert {im.camera for im in imgs} == {"05_1", "11_0", "24_0"}  # elevated camera ignored
    assert {im.yaw for im in imgs} == {0, -90, 90}
    split = multipie_split(imgs, 1)
    assert split.train_subjects == (1, 2, 3, 4) and split.test_subjects == ()
    pairs = multipie_pairs(imgs, split, "train")
    assert len(pairs) == 4 * 4  # 05_1 ill 0, 05_1 ill 7 (itself), 11_0, 24_0 per subject
    assert all(t.camera == "05_1" and t.illumination == 7 and t.subject == i.subject for i, t in pairs)
    items = multipie_items(tmp_path, 1)
    assert len({g for *_, g in items}) == 4


@pytest.mark.parametrize("setting", [1, 2])
def test_harness_matches_an_independent_rank1(setting, shared, tmp_path, monkeypatch):
    monkeypatch.setenv("PIFR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    from benchmarks import multipie_fixture
    from benchmarks._harness import embed_paths
    from benchmarks._multipie import protocol, run

    model3d = shared / "models" / "face-frontalization" / "model3Ddlib.mat"
    tree = multipie_fixture.build(tmp_path / "mpie", shared / "data" / "cfp", setting, range(391, 396),
                                  str(model3d) if model3d.is_file() else None)
    assert (tree / "manifest.csv").is_file()
    out = run(setting, ["--root", str(tree), "--out", str(tmp_path / "out"), "--embedders", "mobilefacenet"])
    rows = list(csv.DictReader(open(out / "rank1.csv")))
    assert (out / "roc.png").is_file() and (out / "rank1.png").is_file()
    rec = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert rec["protocol"]["setting"] == setting and rec["protocol"]["test_subjects"] == 5
    assert "skipped" in rec["methods"]["lightcnn29_v2 raw"]
    # Independent computation: brute-force nearest gallery subject per probe.
    _, gallery, probes = protocol(tree, setting)
    embs = embed_paths([im.path for im in gallery + probes], "mobilefacenet", "retinaface")
    by_yaw = {}
    for p in probes:
        best = max(gallery, key=lambda g: float(np.dot(embs[str(p.path)], embs[str(g.path)])))
        by_yaw.setdefault(p.yaw, []).append(best.subject == p.subject)
    for r in rows:
        assert float(r["mobilefacenet raw"]) == pytest.approx(100 * np.mean(by_yaw[int(r["yaw"])]), abs=0.01)
    assert {int(r["yaw"]) for r in rows} >= {-90, 0, 90}
