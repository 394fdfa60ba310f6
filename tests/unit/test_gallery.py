"""Gallery offline: calibration, search (numpy and faiss), atomic saves, accessors."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pifr
from pifr.gallery import Gallery

from tests.conftest import EXAMPLES, ROOT


def _random_gallery(people: int, templates: int, seed: int):
    """A gallery of random unit templates (``id000``, ``id001``, …) and a random unit query."""
    g = Gallery()
    rng = np.random.default_rng(seed)
    for i in range(people):
        e = rng.normal(size=(templates, g.dim)).astype(np.float32)
        g.add_embeddings(f"id{i:03d}", e / np.linalg.norm(e, axis=1, keepdims=True))
    q = rng.normal(size=g.dim).astype(np.float32)
    return g, q / np.linalg.norm(q)


WRITER = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from pifr.gallery import Gallery
g = Gallery()
rng = np.random.default_rng(0)
e = rng.normal(size=(20000, g.dim)).astype(np.float32)
g.add_embeddings("bulk", e / np.linalg.norm(e, axis=1, keepdims=True))
g.save({path!r})
print("ready", flush=True)
i = 0
while True:
    g.add_embeddings(f"p{{i}}", e[:1]); i += 1
    g.save({path!r})
"""


def test_calibrate_hits_the_target_far():
    g = Gallery()
    rng = np.random.default_rng(0)
    imp = rng.normal(0.8, 0.03, 20000)
    for far in (1e-2, 1e-3):
        thr = g.calibrate(far, imp, per="comparison")
        assert np.mean(imp >= thr) <= far
        assert np.mean(imp >= np.nextafter(thr, -np.inf) - 1e-4) > far * 0.5  # not needlessly strict
        assert g.calibrated_far == far
    # Per probe against N identities: the 1:1 rate is 1 - (1 - FAR)^(1/N), a stricter threshold.
    t1 = g.calibrate(1e-2, imp, per="comparison")
    t50 = g.calibrate(1e-2, imp, per="probe", gallery_size=50)
    assert t50 > t1 and np.mean(imp >= t50) <= 1 - (1 - 1e-2) ** (1 / 50)
    e = rng.normal(size=(30, 128)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    thr = g.calibrate(0.05, embeddings=e, labels=np.arange(30) // 3)
    assert np.isfinite(thr)


def test_faiss_index_gives_the_numpy_results(monkeypatch):
    pytest.importorskip("faiss")  # an optional extra (pip install pifr[faiss])
    import pifr.gallery as G

    g, q = _random_gallery(300, 3, seed=1)
    exact = g.search_embedding(q, k=5)
    monkeypatch.setattr(G, "FAISS_MIN_TEMPLATES", 10)
    assert G.FAISS_MIN_TEMPLATES <= g.templates
    viafaiss = g.search_embedding(q, k=5)
    assert [m.identity for m in viafaiss] == [m.identity for m in exact]
    assert np.allclose([m.score for m in viafaiss], [m.score for m in exact], atol=1e-5)


def test_interrupted_save_never_corrupts(tmp_path):
    path = tmp_path / "live.gallery"
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), path=str(path))],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.4 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        g = Gallery.load(path)  # always the old or the new complete file
        assert g.templates >= 20000
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= 3  # a killed writer may leave its temp file, never a broken gallery


def test_large_gallery_without_faiss_searches_with_numpy(monkeypatch):
    """faiss is optional: above FAISS_MIN_TEMPLATES a machine without it gets numpy's (identical)
    results, not an ImportError."""
    import builtins

    import pifr.gallery as G

    g, q = _random_gallery(30, 2, seed=2)
    exact = g.search_embedding(q, k=3)
    real_import = builtins.__import__
    tries = []

    def no_faiss(name, *a, **kw):
        if name == "faiss":
            tries.append(name)
            raise ImportError("no faiss here")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    monkeypatch.setattr(G, "FAISS_MIN_TEMPLATES", 10)
    got = g.search_embedding(q, k=3)
    assert [(m.identity, m.score) for m in got] == [(m.identity, m.score) for m in exact]
    again = g.search_embedding(q, k=3)  # the missing import is remembered, not retried per search
    assert [(m.identity, m.score) for m in again] == [(m.identity, m.score) for m in exact] and len(tries) == 1


def test_bulk_add_and_template_counts_are_public(tmp_path):
    """A bulk load (one identity per row) and the per-identity counts, without touching the
    gallery's private arrays; a bulk load searches and saves like per-identity calls."""
    g, q = _random_gallery(3, 2, seed=3)
    e = np.stack([q, q, q])
    h = Gallery()
    h.add_embeddings(["a", "b", "a"], e)
    assert h.template_counts() == {"a": 2, "b": 1} and h.templates == 3
    assert g.template_counts() == {"id000": 2, "id001": 2, "id002": 2}
    with pytest.raises(pifr.GalleryError):
        h.add_embeddings(["a"], e)
    h.save(tmp_path / "b.gallery")
    assert Gallery.load(tmp_path / "b.gallery").template_counts() == {"a": 2, "b": 1}


def test_gallery_can_store_raw_and_frontalized_templates(gen_file):
    g = pifr.Gallery(frontalizer=str(gen_file))
    rep = g.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png"], templates="both")
    assert rep.added == 4 and g.templates == 4 and g.identities == ["mitchell"]
    assert g.enroll("again", [EXAMPLES / "mitchell_turned.png"], templates="both").duplicates == (0,)
    with pytest.raises(pifr.GalleryError):
        g.enroll("x", [EXAMPLES / "night_frontal.png"], templates="sometimes")


def test_a_probe_fused_under_auto_is_judged_with_the_rules_threshold_shift(monkeypatch):
    """The default policy fuses a 52°-turned probe with its frontal render; its acceptance uses the
    operating threshold plus the rule's measured shift (here exaggerated to make the effect plain)."""
    from pifr import frontalization as F

    g = pifr.Gallery(threshold=0.5)
    g.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png"])
    assert g.frontalize == "auto" and g.identify(EXAMPLES / "mitchell_turned.png")[0].accepted
    monkeypatch.setitem(F.AUTO_RULES, "dlib_resnet", F.AutoRule(45.0, 0.25, 0.6))
    m = g.identify(EXAMPLES / "mitchell_turned.png")[0]
    assert m.identity == "mitchell" and not m.accepted  # 0.5 + 0.6 is out of reach
    assert not g.verify("mitchell", EXAMPLES / "mitchell_turned.png").accepted
    # A near-frontal probe is not fused and keeps the plain threshold.
    assert g.identify(EXAMPLES / "mitchell_sunglasses.png")[0].accepted


def test_identify_face_applies_the_policy_to_a_face_already_found(monkeypatch):
    """identify_face(img, face) on a face from detect() scores exactly as identify(img) does — the
    same fused template and the same shifted threshold — so a frame with several faces gets the policy."""
    from pifr import frontalization as F
    from pifr.detection import detect

    g = pifr.Gallery(threshold=0.5)
    g.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png"])
    arr = pifr.load_image(EXAMPLES / "mitchell_turned.png")
    face = max(detect(arr), key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
    assert g.identify_face(arr, face)[0] == g.identify(arr)[0]
    monkeypatch.setitem(F.AUTO_RULES, "dlib_resnet", F.AutoRule(45.0, 0.25, 0.6))
    m = g.identify_face(arr, face)[0]
    assert m.identity == "mitchell" and not m.accepted  # the shift applies
    raw = pifr.Gallery(threshold=0.5, frontalize="never")
    raw.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png"])
    assert raw.identify_face(arr, face)[0].score != m.score  # and the fused template differs from raw
    with pytest.raises(pifr.GalleryError):
        pifr.Gallery(threshold=0.5).identify_face(arr, face)
