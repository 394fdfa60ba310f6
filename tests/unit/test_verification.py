"""verify() on the shipped example photos."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import pifr
from pifr.embedders import DEFAULT_EMBEDDER

from tests.conftest import EXAMPLES, ROOT

A, A2, A_TURNED = EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_sunglasses.png", EXAMPLES / "mitchell_turned.png"
B, B_TURNED, C = EXAMPLES / "night_frontal.png", EXAMPLES / "night_turned.png", EXAMPLES / "phoebe_frontal.png"


def test_same_and_different_people():
    r = pifr.verify(A, A_TURNED)
    assert isinstance(r, pifr.Verification) and r.same and bool(r)
    assert r.faces[1].yaw > 25 and abs(r.faces[0].yaw) < 15  # the turned photo is recognised as turned
    assert r.distance == pytest.approx(1 - r.score)
    for x, y in ((A, B), (A, C), (B, C)):
        assert not pifr.verify(x, y).same, (x.name, y.name)
    assert pifr.verify(B, B_TURNED).same


def test_result_is_typed_and_serialisable():
    r = pifr.verify(A, B, embedder="mobilefacenet")
    d = r.to_dict()
    json.dumps(d)
    assert d["embedder"] == "mobilefacenet" and d["metric"] == "cosine" and len(d["yaw"]) == 2
    with pytest.raises(Exception):
        r.same = True


def test_explicit_threshold_is_used():
    r = pifr.verify(A, B, threshold=-1.0)
    assert r.same and r.threshold == -1.0


def test_no_face_error_names_the_image():
    with pytest.raises(pifr.NoFaceError, match="second"):
        pifr.verify(A, np.full((160, 160, 3), 127, np.uint8))


def test_frontalize_modes_are_checked(tmp_path, monkeypatch):
    with pytest.raises(pifr.InvalidPolicyError) as e:
        pifr.verify(A, B, frontalize="sometimes")
    assert isinstance(e.value, ValueError) and not isinstance(e.value, pifr.UnknownModelError)
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(pifr.WeightsNotFoundError):
        pifr.verify(A, B, frontalize="always", threshold=0.5, frontalizer=tmp_path / "missing.safetensors")
    # "always" compares frontal views alone, for which no threshold is measured: refused without one.
    with pytest.raises(pifr.InvalidPolicyError, match="threshold"):
        pifr.verify(A, B, frontalize="always")


def test_auto_is_the_default_and_frontalizes_only_turned_faces():
    """The default policy renders the 52°-turned face and fuses it (the default embedder's rule:
    |yaw| > 30°, several renders pooled), leaves the frontal one raw, and still says SAME for this pair."""
    from pifr.policy import rule_for

    r = pifr.verify(EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png")
    assert r.frontalized == (False, True) and r.same
    raw = pifr.verify(EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png", frontalize="never")
    assert raw.frontalized == (False, False) and raw.score != r.score
    # A fused face is judged against the threshold shifted by the rule's measured amount.
    assert r.threshold == pytest.approx(raw.threshold + rule_for(DEFAULT_EMBEDDER).threshold_shift)
    # An explicit yaw threshold above the face's yaw turns the rule off for it.
    assert pifr.verify(EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png", yaw_threshold=80).frontalized == (False, False)
    assert rule_for(DEFAULT_EMBEDDER).yaw_threshold < 52 < 80


def test_auto_embeds_raw_for_an_embedder_without_a_measured_rule(monkeypatch):
    from pifr import policy

    monkeypatch.setattr(policy, "shipped_rules", lambda: policy.RuleSet(()))  # a pifr that ships no rules
    r = pifr.verify(EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png")
    assert r.frontalized == (False, False)


def test_import_is_fast_and_loads_no_torch():
    code = "import sys, pifr; assert 'torch' not in sys.modules; print(pifr.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_list_of_frames_is_one_person_pooled():
    """Several images of one person are pooled into one probe; a frame that is not an image or has
    no face is left out while others remain; none at all is a typed error."""
    one = pifr.verify(A, A_TURNED, embedder="mobilefacenet")
    two = pifr.verify([A, A2], A_TURNED, embedder="mobilefacenet")
    assert one.frames == (1, 1) and two.frames == (2, 1) and two.to_dict()["frames"] == [2, 1]
    assert two.same and two.score != pytest.approx(one.score)
    blank = np.full((120, 120, 3), 128, np.uint8)
    kept = pifr.verify([b"not an image", blank, A], A_TURNED, embedder="mobilefacenet")
    assert kept.frames == (1, 1) and kept.score == pytest.approx(one.score, abs=1e-5)
    assert not pifr.verify([B, B_TURNED], [A, A_TURNED], embedder="mobilefacenet").same
    with pytest.raises(pifr.NoFaceError, match="none of its 2 frames"):
        pifr.verify([blank, b"junk"], A, embedder="mobilefacenet")
    with pytest.raises(pifr.InvalidArgumentError, match="empty"):
        pifr.verify([], A)
