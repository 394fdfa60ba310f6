"""The face pipeline: one policy applied the same way by every entry point, fusion and pooled
views, one 3D fit per face, batches that match one-at-a-time results, and bad items that never
stop a batch."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import pifr
from pifr.pipeline import Pipeline
from pifr.policy import RAW_TREATMENT, AutoRule, Policy
from tests.conftest import EXAMPLES

TURNED = EXAMPLES / "mitchell_turned.png"


def _face(path=TURNED):
    from pifr.detection import detect_one

    arr = pifr.load_image(path)
    return arr, detect_one(arr)


def test_fusion_weight_blends_raw_and_the_view(gen_file):
    """w = 0 gives the raw embedding, w = 1 the view's, w = 0.5 their normalised mean; a face the
    rule leaves alone is raw."""
    arr, face = _face()
    assert face.yaw > 30

    def one(**kw):
        return Pipeline("mobilefacenet", frontalizer=str(gen_file), **kw).embed_faces([(arr, face)])[0]

    raw, front = one(frontalize="never"), one(frontalize="always")
    assert not raw.fused and front.fused and raw.treatment == RAW_TREATMENT != front.treatment
    assert float(raw.embedding @ front.embedding) < 0.99  # the (untrained) generator changes the face
    w0 = one(yaw_threshold=30, fusion_weight=0.0)
    assert w0.fused and np.allclose(w0.embedding, raw.embedding, atol=1e-5)
    assert np.allclose(one(yaw_threshold=30, fusion_weight=1.0).embedding, front.embedding, atol=1e-5)
    half = one(yaw_threshold=30, fusion_weight=0.5).embedding
    mean = (raw.embedding + front.embedding) / np.linalg.norm(raw.embedding + front.embedding)
    assert np.allclose(half, mean, atol=1e-5) and abs(np.linalg.norm(half) - 1) < 1e-5
    high = one(yaw_threshold=89, fusion_weight=0.5)
    assert not high.fused and np.allclose(high.embedding, raw.embedding, atol=1e-5)


def test_a_rule_with_view_yaws_renders_the_face_on_its_own_side_from_one_fit_and_pools_the_views(monkeypatch):
    from pifr import face3d, pose, views

    asked, passes = [], []
    real_views, real_regress, real_fit = views.Render3D.view_crops, pose.regress_faces, face3d.fit_faces

    def spy(self, arr, face, template, yaws, fit=None):
        asked.append((list(yaws), fit is not None))
        return real_views(self, arr, face, template, yaws, fit=fit)

    def count(items, *a, **k):
        passes.append(len(items))
        return real_regress(items, *a, **k)

    arr, face = _face()
    monkeypatch.setattr(views.Render3D, "view_crops", spy)
    monkeypatch.setattr(pose, "regress_faces", count)
    monkeypatch.setattr(face3d, "fit_faces", lambda *a, **k: pytest.fail("the pipeline fits from its own pass"))
    rule = AutoRule(30.0, 1.0, 0.0, view_yaws=(15.0, 45.0))
    pipe = Pipeline(policy=Policy("auto", "mobilefacenet", "3d", rule))
    bare = dataclasses.replace(face, yaw=None)
    r = pipe.embed_faces([(arr, bare)])[0]
    # One 3DDFA pass gave the yaw and the fit; the renders used that fit.
    assert r.fused and passes == [1] and asked == [([15.0, 45.0], True)] and r.face.yaw == pytest.approx(face.yaw, abs=0.5)
    monkeypatch.setattr(face3d, "fit_faces", real_fit)  # the expected value, the long way
    each = pipe.embedder.embed_crops(views.Render3D().view_crops(arr, face, pipe.embedder.template, [15.0, 45.0]))
    expect = each.mean(0) / np.linalg.norm(each.mean(0))
    assert np.allclose(r.embedding, expect, atol=1e-4) and float(each[0] @ each[1]) < 0.9999
    mirrored = dataclasses.replace(face, yaw=-face.yaw)
    pipe.embed_faces([(arr, mirrored)])
    assert asked[-1][0] == [-15.0, -45.0]
    n = len(asked)
    alone = Pipeline(policy=Policy("auto", "mobilefacenet", "3d", dataclasses.replace(rule, yaw_threshold=80.0)))
    assert not alone.embed_faces([(arr, face)])[0].fused and len(asked) == n


def test_a_batch_matches_one_at_a_time_and_keeps_bad_items_in_place(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    items = [EXAMPLES / "mitchell_frontal.png", bad, TURNED, np.zeros((64, 64, 3), np.uint8), EXAMPLES / "night_turned.png"]
    pipe = Pipeline()
    batch = pipe.embed_images(items)
    assert isinstance(batch[1], pifr.InvalidImageError) and isinstance(batch[3], pifr.NoFaceError)
    for i in (0, 2, 4):
        alone = pifr.embed(items[i])
        assert float(batch[i].embedding @ alone) > 0.9999
    assert batch[2].fused and not batch[0].fused and batch[2].threshold_shift == pipe.policy.rule.threshold_shift


def test_an_event_pools_its_frames_and_leaves_a_bad_frame_out(tmp_path):
    pipe = Pipeline()
    one = pipe.embed_event(EXAMPLES / "mitchell_frontal.png")
    assert len(one.faces) == 1 and one.threshold_shift == 0.0
    both = pipe.embed_event([EXAMPLES / "mitchell_frontal.png", tmp_path / "missing.jpg", TURNED])
    assert len(both.faces) == 2 and both.fused
    assert both.threshold_shift == pytest.approx(pipe.policy.rule.threshold_shift + pipe.policy.event_threshold_shift)
    with pytest.raises(pifr.InvalidArgumentError):
        pipe.embed_event([])
    with pytest.raises(pifr.NoFaceError, match="none of its 2 frames"):
        pipe.embed_event([tmp_path / "missing.jpg", np.zeros((64, 64, 3), np.uint8)])
    with pytest.raises(pifr.InvalidImageError):  # a single image raises its own error
        pipe.embed_event(tmp_path / "missing.jpg")


def test_every_entry_point_passes_the_same_policy_to_the_pipeline(monkeypatch, tmp_path):
    """The yaw threshold and fusion weight given to Gallery, verify, embed and embed_many are the
    ones the pipeline runs with, and a saved gallery keeps them."""
    import pifr.pipeline as P

    seen = []
    real = P.Pipeline.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        seen.append((self.policy.mode, self.policy.rule.yaw_threshold, self.policy.rule.fusion_weight))

    monkeypatch.setattr(P.Pipeline, "__init__", spy)
    img = EXAMPLES / "night_turned.png"
    pifr.verify(img, img, embedder="mobilefacenet", yaw_threshold=30, fusion_weight=0.5)
    pifr.embed(img, embedder="mobilefacenet", yaw_threshold=31, fusion_weight=0.6)
    g = pifr.Gallery("mobilefacenet", yaw_threshold=32, fusion_weight=0.7)
    g.enroll("night", [img])
    g.identify(img)
    assert seen == [("auto", 30.0, 0.5), ("auto", 31.0, 0.6), ("auto", 32.0, 0.7)]  # the gallery builds one, once
    g.save(tmp_path / "g.gallery")
    h = pifr.Gallery.load(tmp_path / "g.gallery")
    assert (h.frontalize, h.yaw_threshold, h.fusion_weight) == ("auto", 32.0, 0.7) and h.stale_templates == {}


def test_a_policy_for_another_embedder_is_refused():
    with pytest.raises(pifr.InvalidPolicyError):
        Pipeline("sface", policy=Policy("auto", "mobilefacenet", "3d", AutoRule(30.0, 0.5)))
    with pytest.raises(pifr.InvalidArgumentError):
        Pipeline(batch_size=0)
