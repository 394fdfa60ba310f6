"""The Multi-PIE harnesses, end to end on a Multi-PIE-shaped tree of real faces, checked against
an independent rank-1 computation from the same embeddings."""
from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.parametrize("setting", [1, 2])
def test_harness_matches_an_independent_rank1(setting, shared, tmp_path, monkeypatch):
    monkeypatch.setenv("PIFR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    import multipie_fixture
    from _harness import embed_paths
    from _multipie import protocol, run

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
