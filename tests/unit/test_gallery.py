"""Gallery offline: calibration, search (numpy and faiss), atomic saves, accessors."""
from __future__ import annotations

import dataclasses
import itertools
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pifr
from pifr.embedders import DEFAULT_EMBEDDER
from pifr.gallery import Gallery
from pifr.policy import AutoRule

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
from pifr.policy import AutoRule
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


def test_faiss_index_gives_the_numpy_results():
    pytest.importorskip("faiss")  # an optional extra (pip install pifr[faiss])
    from pifr.gallery.search import FaissIndex

    g, q = _random_gallery(300, 3, seed=1)
    assert g.search_backend == "auto"  # numpy below FAISS_MIN_TEMPLATES
    exact = g.search_embedding(q, k=5)
    g.search_backend = "faiss"
    assert isinstance(g._search.index(g._emb), FaissIndex)
    with pytest.raises(pifr.InvalidArgumentError):
        g.search_backend = "annoy"
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
    """faiss is optional: a gallery that asks for it on a machine without it gets numpy's
    (identical) results, not an ImportError."""
    import builtins

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
    g.search_backend = "faiss"
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


def _with_rule(monkeypatch, embedder, rule):
    """As if this pifr shipped ``rule`` for ``embedder`` (another rules file)."""
    from pifr import policy

    rules = policy.shipped_rules().with_rule(embedder, ["3d", "refined"], rule)
    monkeypatch.setattr(policy, "shipped_rules", lambda: rules)


def test_a_probe_fused_under_auto_is_judged_with_the_rules_threshold_shift(monkeypatch):
    """The default policy fuses a 52°-turned probe with its renders; its acceptance uses the
    operating threshold plus the rule's measured shift (here exaggerated to make the effect plain)."""
    g = pifr.Gallery(threshold=0.5)
    g.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png"])
    assert g.frontalize == "auto" and g.identify(EXAMPLES / "mitchell_turned.png")[0].accepted
    _with_rule(monkeypatch, DEFAULT_EMBEDDER, AutoRule(45.0, 0.25, 0.6))
    g = pifr.Gallery(threshold=0.5)
    g.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png"])
    m = g.identify(EXAMPLES / "mitchell_turned.png")[0]
    assert m.identity == "mitchell" and not m.accepted  # 0.5 + 0.6 is out of reach
    assert not g.verify("mitchell", EXAMPLES / "mitchell_turned.png").accepted
    # A near-frontal probe is not fused and keeps the plain threshold.
    assert g.identify(EXAMPLES / "mitchell_sunglasses.png")[0].accepted


def test_identify_face_applies_the_policy_to_a_face_already_found(monkeypatch):
    """identify_face(img, face) on a face from detect() scores exactly as identify(img) does — the
    same fused template and the same shifted threshold — so a frame with several faces gets the policy."""
    from pifr.detection import detect

    arr = pifr.load_image(EXAMPLES / "mitchell_turned.png")
    face = max(detect(arr), key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
    g = pifr.Gallery(threshold=0.5)
    g.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png"])
    same, alone = g.identify_face(arr, face)[0], g.identify(arr)[0]
    assert same.identity == alone.identity and same.accepted == alone.accepted and abs(same.score - alone.score) < 1e-4
    _with_rule(monkeypatch, DEFAULT_EMBEDDER, AutoRule(45.0, 0.25, 0.6))
    g = pifr.Gallery(threshold=0.5)
    g.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png"])
    m = g.identify_face(arr, face)[0]
    assert m.identity == "mitchell" and not m.accepted  # the shift applies
    raw = pifr.Gallery(threshold=0.5, frontalize="never")
    raw.enroll("mitchell", [EXAMPLES / "mitchell_frontal.png"])
    assert raw.identify_face(arr, face)[0].score != m.score  # and the fused template differs from raw
    with pytest.raises(pifr.GalleryError):
        pifr.Gallery(threshold=0.5).identify_face(arr, face)


def _fake_policy(monkeypatch, yaws=None):
    """Enrollment without networks: any image is one face whose template is a unit vector from its
    pixels; its yaw is ``yaws[first pixel]``, else 60° for first pixels ≥ 100 (the "turned" ones)
    and 0° below. Whether the gallery's policy fuses it, and the treatment recorded, are the
    policy's own (:meth:`pifr.policy.Policy.fuses`, :meth:`~pifr.policy.Policy.treatment`)."""
    from pifr.pipeline import FaceEmbedding, Pipeline, pixels_sha256
    from pifr.types import Face

    face = Face(np.array([4, 4, 28, 28], np.float32), 0.99, np.full((5, 2), 16, np.float32))

    def embed_images(self, images, *, names=None, hash_pixels=False, **kw):
        out = []
        for item in images:
            try:
                arr = pifr.load_image(item[0] if isinstance(item, tuple) else item)
            except pifr.PifrError as e:
                out.append(e)
                continue
            px = int(arr[0, 0, 0])
            v = np.random.default_rng(px).normal(size=self.embedder.dim).astype(np.float32)
            yaw = (yaws or {}).get(px, 60.0 if px >= 100 else 0.0)
            fused = self.policy.fuses(yaw)
            out.append(FaceEmbedding(v / np.linalg.norm(v), face.with_yaw(yaw), fused,
                                     self.policy.treatment(yaw, self.view_key()), self.policy.threshold_shift(fused),
                                     pixels_sha256(arr)))
        return out

    monkeypatch.setattr(Pipeline, "embed_images", embed_images)


def _photo(value: int) -> np.ndarray:
    return np.full((32, 32, 3), value, np.uint8)


def _retuned(monkeypatch):
    """A later pifr's re-tuned "auto" rule for the default embedder (another fusion weight)."""
    from pifr.policy import rule_for

    old = rule_for(DEFAULT_EMBEDDER)
    _with_rule(monkeypatch, DEFAULT_EMBEDDER, dataclasses.replace(old, fusion_weight=old.fusion_weight + 0.25))


def _stale_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "re-enrolling" in r.getMessage()]


def test_templates_fused_under_another_rule_are_reported_stale_on_load(monkeypatch, tmp_path, caplog):
    """A gallery saved with fused templates, loaded by a pifr whose rule makes the view otherwise:
    a warning that names the count, and stale_templates by identity; frontal (raw) templates and
    add_embeddings ones are never stale, and an unchanged rule reports nothing."""
    _fake_policy(monkeypatch)
    g = Gallery()
    assert g.frontalize == "auto"
    assert g.enroll("alice", [_photo(1), _photo(101)]).added == 2   # one frontal, one turned (fused)
    assert g.enroll("bob", [_photo(102), _photo(103)]).added == 2   # both turned
    g.enroll("carol", [_photo(2)])                                  # frontal only
    g.add_embeddings("dave", np.eye(g.dim, dtype=np.float32)[:1])
    assert g.stale_templates == {}
    p = tmp_path / "g.gallery"
    g.save(p)
    with caplog.at_level("WARNING", logger="pifr"):
        same = Gallery.load(p)
    assert same.stale_templates == {} and not _stale_warnings(caplog)

    _retuned(monkeypatch)
    assert g.stale_templates == {"alice": 1, "bob": 2}  # also in memory: the rule it enrolled with has changed
    caplog.clear()
    with caplog.at_level("WARNING", logger="pifr"):
        h = Gallery.load(p)
    assert h.stale_templates == {"alice": 1, "bob": 2}
    (msg,) = _stale_warnings(caplog)
    assert "3 templates of 2 identities" in msg
    h.enroll("erin", [_photo(104)])  # enrolled under the new rule: current
    assert h.stale_templates == {"alice": 1, "bob": 2}


def test_removing_an_identity_keeps_the_view_provenance_aligned(monkeypatch, tmp_path):
    _fake_policy(monkeypatch)
    g = Gallery()
    g.enroll("alice", [_photo(101), _photo(102)])
    g.enroll("bob", [_photo(1)])
    g.enroll("carol", [_photo(3), _photo(103)])
    assert g.remove("alice") == 2
    g.save(tmp_path / "g.gallery")
    _retuned(monkeypatch)
    h = Gallery.load(tmp_path / "g.gallery")
    # Misaligned provenance would flag bob's raw template (or fail to load).
    assert h.stale_templates == {"carol": 1} and h.template_counts() == {"bob": 1, "carol": 2}
    h.remove("carol")
    assert h.stale_templates == {}


def test_a_turned_face_auto_left_raw_is_stale_once_a_rule_would_fuse_it(monkeypatch, tmp_path):
    """"auto" records the yaw of a face it left raw: when a later rule fuses that yaw (a lower yaw
    threshold, or a rule for an embedder that had none), a probe of the photo is fused and the raw
    template no longer matches — it is listed stale, through a save and load; a frontal face, and
    raw templates of a "never" gallery, are not."""
    from pifr.policy import rule_for

    _fake_policy(monkeypatch, yaws={1: 0.0, 2: -40.0})  # pixel values < 100: left raw
    old = rule_for(DEFAULT_EMBEDDER)
    _with_rule(monkeypatch, DEFAULT_EMBEDDER, dataclasses.replace(old, yaw_threshold=45.0))
    g, never = Gallery(), Gallery(frontalize="never")
    g.enroll("bob", [_photo(1), _photo(2)])
    never.enroll("bob", [_photo(1), _photo(2)])
    assert g.stale_templates == {} and never.stale_templates == {}
    p = tmp_path / "g.gallery"
    g.save(p)
    _with_rule(monkeypatch, DEFAULT_EMBEDDER, dataclasses.replace(old, yaw_threshold=30.0))
    assert g.stale_templates == {"bob": 1} and Gallery.load(p).stale_templates == {"bob": 1}
    assert never.stale_templates == {}
    assert Gallery(yaw_threshold=50.0).stale_templates == {}  # nothing enrolled
    g.yaw_threshold = 50.0  # an explicit threshold above the face's yaw: it stays raw
    assert g.stale_templates == {}


def test_files_without_view_provenance_load_with_none_stale(monkeypatch, tmp_path, caplog):
    """Files of older pifr (schema 2 without the view arrays, schema 1) say nothing of how their
    templates were made: unknown is not stale, and nothing is logged about it."""
    import json

    _fake_policy(monkeypatch)
    g = Gallery()
    g.enroll("bob", [_photo(101)])
    p = tmp_path / "g.gallery"
    g.save(p)
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("view")}
    old = tmp_path / "old.gallery"
    with open(old, "wb") as f:
        np.savez(f, **arrays)
    h1 = {"magic": "pifr-gallery", "schema": 1, "embedder": DEFAULT_EMBEDDER, "embedder_sha256": g.embedder_sha256,
          "dim": g.dim, "threshold": 0.9, "calibrated_far": None, "frontalize": "auto"}
    older = tmp_path / "older.gallery"
    with open(older, "wb") as f:
        np.savez(f, header=np.array(json.dumps(h1)), embeddings=g._emb, labels=np.array(["bob"]), hashes=np.array(["h"]))
    _retuned(monkeypatch)
    assert Gallery.load(p).stale_templates == {"bob": 1}  # the same file with its provenance: stale
    caplog.clear()
    with caplog.at_level("WARNING", logger="pifr"):
        for path in (old, older):
            h = Gallery.load(path)
            assert h.stale_templates == {} and h.templates == 1
            h.enroll("carol", [_photo(102)])
            h.save(path)  # unknown stays unknown through a save; the new template is current
            assert Gallery.load(path).stale_templates == {}
    assert not _stale_warnings(caplog)


def _saved_arrays(monkeypatch, tmp_path):
    """A gallery of one fused and one raw template saved to ``tmp_path``: ``(path, its arrays)``."""
    _fake_policy(monkeypatch)
    g = Gallery()
    g.enroll("bob", [_photo(101), _photo(1)])
    p = tmp_path / "g.gallery"
    g.save(p)
    with np.load(p, allow_pickle=False) as z:
        return p, {k: z[k] for k in z.files}


def test_damaged_view_provenance_is_a_gallery_error(monkeypatch, tmp_path):
    p, arrays = _saved_arrays(monkeypatch, tmp_path)
    for bad in (np.array([0], np.int32), np.array([0, 5], np.int32), np.array([0.0, 1.0]), np.array([-2, 0], np.int32)):
        with open(p, "wb") as f:
            np.savez(f, **{**arrays, "view_ids": bad})
        with pytest.raises(pifr.GalleryError, match="view_ids"):
            Gallery.load(p)


def test_view_provenance_arrays_come_all_three_or_none(monkeypatch, tmp_path):
    """save() writes view_ids, views_utf8 and views_offsets together; a file with only some of
    them is damaged (never read as "provenance unknown"), while one with none is an older pifr's."""
    p, arrays = _saved_arrays(monkeypatch, tmp_path)
    names = ("view_ids", "views_utf8", "views_offsets")
    for keep in itertools.chain.from_iterable(itertools.combinations(names, r) for r in (1, 2)):
        with open(p, "wb") as f:
            np.savez(f, **{k: v for k, v in arrays.items() if k not in names or k in keep})
        with pytest.raises(pifr.GalleryError, match="view"):
            Gallery.load(p)
    with open(p, "wb") as f:
        np.savez(f, **{k: v for k, v in arrays.items() if k not in names})
    assert Gallery.load(p).templates == 2


def test_stale_templates_never_raises_for_a_frontalizer_that_cannot_be_resolved(monkeypatch, tmp_path):
    """A frontalizer named at load that is no weights file (a folder, "refined:" with no file,
    a FIFO, a name with a NUL) cannot make probes either: the gallery loads, and its fused
    templates are not judged (no hash of a folder, no read that blocks on a FIFO)."""
    import os

    _fake_policy(monkeypatch)
    g = Gallery()
    g.enroll("bob", [_photo(101)])
    p = tmp_path / "g.gallery"
    g.save(p)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad in (str(tmp_path), "refined:", f"refined:{tmp_path}", str(fifo), "gen\x00.safetensors",
                str(tmp_path / "missing.safetensors")):
        assert Gallery.load(p, frontalizer=bad).stale_templates == {}, bad


def test_a_gallery_saves_to_and_loads_from_any_store(tmp_path):
    """The storage interface carries no file assumption: an in-memory store takes a gallery and
    gives it back whole; a FileStore's version is None before the first save and changes with each."""
    import contextlib

    from pifr.gallery import FileStore, GalleryState

    class MemoryStore:
        def __init__(self):
            self.state, self.saves = None, 0

        def load(self) -> GalleryState:
            if self.state is None:
                raise pifr.GalleryError("empty store")
            return self.state

        def save(self, state: GalleryState) -> None:
            self.state, self.saves = state, self.saves + 1

        def lock(self):
            return contextlib.nullcontext()

        def version(self):
            return None if self.state is None else str(self.saves)

    g, q = _random_gallery(4, 2, seed=4)
    g.calibrate(1e-2, np.linspace(0.2, 0.6, 1000))
    store = MemoryStore()
    with Gallery.edit(store, create=True) as h:
        h.add_embeddings("solo", g._emb[:1])
    with Gallery.edit(store) as h:
        assert h.template_counts() == {"solo": 1}
    g.save(store)
    back = Gallery.load(store)
    assert back.search_embedding(q, k=3) == g.search_embedding(q, k=3)
    assert (back.threshold, back.threshold_source, back.calibrated_far) == (g.threshold, "calibrated", 1e-2)
    assert store.state.embeddings.shape == (8, g.dim) and store.state.embeddings.dtype == np.float32
    files = FileStore(tmp_path / "g.gallery")
    assert files.version() is None
    g.save(files)
    v1 = files.version()
    g.add_embeddings("late", g._emb[:1])
    g.save(files)
    assert v1 is not None and files.version() not in (None, v1)
    assert Gallery.load(files).template_counts() == g.template_counts()
    with pytest.raises(pifr.GalleryError):
        Gallery.load(MemoryStore())


def test_a_door_event_pools_its_frames_and_decides_once(monkeypatch, caplog):
    """identify/verify take several frames of one person (images or (image, Face) pairs): one
    pooled probe, one decision, a bad frame left out; the threshold moves by the event shift."""
    from pifr.policy import rule_for
    from pifr.types import Face

    _fake_policy(monkeypatch)
    g = Gallery(threshold=0.5)
    g.enroll("alice", [_photo(1)])
    g.enroll("bob", [_photo(2)])
    alice = g.identify(_photo(1))[0]
    assert alice.identity == "alice" and alice.score == pytest.approx(1.0, abs=1e-5)
    # Alice's own frame and a stranger's: their pooled probe lies between them (cos 45°-ish to each).
    ev = g.identify([_photo(1), _photo(7)])[0]
    assert ev.identity == "alice" and 0.5 < ev.score < 0.9
    face = Face(np.array([4, 4, 28, 28], np.float32), 0.99, np.full((5, 2), 16, np.float32), yaw=0.0)
    with caplog.at_level("WARNING", logger="pifr"):
        kept = g.identify([b"junk", (_photo(1), face)])[0]
    assert kept.score == pytest.approx(1.0, abs=1e-5) and "left out" in caplog.text
    with pytest.raises(pifr.NoFaceError, match="none of its 2 frames"):
        g.identify([b"junk", b"more junk"])
    with pytest.raises(pifr.InvalidImageError):  # one frame: its own error
        g.identify([b"junk"])
    with pytest.raises(pifr.InvalidArgumentError):
        g.identify([])
    _with_rule(monkeypatch, DEFAULT_EMBEDDER, dataclasses.replace(rule_for(DEFAULT_EMBEDDER), event_threshold_shift=0.6))
    # pooled probes judged stricter: 0.5 + 0.6 > 1
    assert g.verify("alice", [_photo(1), _photo(1)]).accepted is False
    assert g.verify("alice", [_photo(1)]).accepted is True  # one frame: no event shift


def test_a_gallery_saved_before_the_policy_module_loads_current(caplog):
    """tests/unit/data/gallery_5bdf24a.gallery was saved by pifr at commit 5bdf24a (sface, "auto":
    mitchell's frontal photo left raw at 2.8°, his turned photo and night's fused): its records
    ("auto-raw:<yaw>", "auto:<fingerprint>") read as today's treatments, nothing is stale, the
    templates are the same, and a probe made now matches them as a probe made then did."""
    path = ROOT / "tests" / "unit" / "data" / "gallery_5bdf24a.gallery"
    with caplog.at_level("WARNING", logger="pifr"):
        g = Gallery.load(path)
    assert not _stale_warnings(caplog) and g.stale_templates == {}
    assert g.template_counts() == {"mitchell": 2, "night": 1} and g._yaws[0] == pytest.approx(2.8)
    m = g.identify(EXAMPLES / "mitchell_turned.png")[0]
    assert m.identity == "mitchell" and m.score > 0.9999  # the same photo, embedded the same way as then
    m = g.identify(EXAMPLES / "mitchell_sunglasses.png")[0]
    assert m.identity == "mitchell" and m.score == pytest.approx(0.63231, abs=1e-4) and m.accepted
