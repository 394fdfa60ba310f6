"""The pose policy as data: the rules file, its validation, resolving a policy, and the
treatment fingerprints that gallery staleness compares."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import pifr
from pifr.policy import (FRONTALIZE_MODES, RAW_TREATMENT, RULES_FILE, AutoRule, Policy, RuleSet, load_rules,
                         resolve_policy, rule_for, shipped_rules)


@pytest.mark.parametrize("mode,thr,w", [
    ("Auto", 45, 0.25), ("AUTO", 45, 0.25), ("sometimes", 45, 0.25), (None, 45, 0.25), (True, 45, 0.25),
    ("auto", -1, 0.25), ("auto", 91, 0.25), ("auto", float("nan"), 0.25), ("auto", "45", 0.25),
    ("auto", 45, -0.1), ("auto", 45, 1.5), ("auto", 45, float("nan")), ("auto", 45, True),
])
def test_one_validation_refuses_every_bad_policy(mode, thr, w):
    with pytest.raises(pifr.InvalidPolicyError) as e:
        resolve_policy("sface", mode, yaw_threshold=thr, fusion_weight=w)
    assert isinstance(e.value, ValueError) and not isinstance(e.value, pifr.UnknownModelError)


def test_resolving_takes_the_measured_rule_and_explicit_values_over_it():
    assert FRONTALIZE_MODES == ("never", "always", "auto")
    measured = rule_for("sface")
    p = resolve_policy("sface")
    assert p == Policy("auto", "sface", "3d", measured) and p.rule.view_yaws == (0.0, 15.0, 30.0, 45.0)
    q = resolve_policy("sface", yaw_threshold=np.float32(40), fusion_weight=np.int64(1))
    assert q.rule == dataclasses.replace(measured, yaw_threshold=40.0, fusion_weight=1.0)
    assert resolve_policy("sface", "never").rule is None and not resolve_policy("sface", "never").needs_views
    assert resolve_policy("sface", "always").fusion_weight == 1.0 and resolve_policy("sface", "always").fuses(0.0)
    # A caller's generator: the "*" row (nothing measured: few faces, a small weight, the frontal view).
    g = resolve_policy("sface", view="tpgan")
    assert (g.rule.yaw_threshold, g.rule.fusion_weight, g.rule.view_yaws) == (45.0, 0.25, (0.0,))
    # The refiner's view follows the render's rule.
    assert resolve_policy("sface", view="refined").rule == measured


def test_an_embedder_without_a_rule_fuses_nothing_unless_told(caplog):
    p = resolve_policy("no_rule_here")
    assert p.rule is None and not p.fuses(80.0) and p.fuses_above is None
    assert "no measured rule" in caplog.text
    q = resolve_policy("no_rule_here", yaw_threshold=30, fusion_weight=0.5)
    assert q.fuses(31.0) and not q.fuses(29.0) and q.view_yaws(-50.0) == (0.0,) and q.threshold_shift(True) == 0.0


def test_a_policy_says_which_faces_it_fuses_and_renders_them_on_their_own_side():
    p = Policy("auto", "x", "3d", AutoRule(30.0, 0.5, 0.01, view_yaws=(0.0, 45.0), event_threshold_shift=0.02))
    assert not p.fuses(30.0) and p.fuses(30.5) and p.fuses(-31.0) and not p.fuses(None)
    assert p.view_yaws(50.0) == (0.0, 45.0) and p.view_yaws(-50.0) == (0.0, -45.0)
    assert p.threshold_shift(True) == 0.01 and p.threshold_shift(False) == 0.0
    with pytest.raises(pifr.InvalidPolicyError):
        Policy("Auto", "x")
    with pytest.raises(pifr.InvalidPolicyError):
        Policy("auto", "x", "a-view-that-does-not-exist")


@pytest.mark.parametrize("bad", [(), (95.0,), (float("nan"),), (-10.0,), 45.0, "45", ("x",), (None,)])
def test_auto_rule_refuses_view_yaws_outside_0_to_90(bad):
    with pytest.raises(pifr.InvalidPolicyError, match="view_yaws"):
        AutoRule(30.0, 0.5, view_yaws=bad)


def test_treatments_follow_the_rule_and_the_views_and_nothing_else():
    key = {"view": "3d-render", "weights_sha256": None, "fit_sha256": ["a", "b"]}
    p = resolve_policy("dlib_resnet")
    fused = p.treatment(50.0, key)
    assert len(fused) == 16 and p.treatment(10.0, key) == RAW_TREATMENT and p.treatment(None, key) == fused
    others = {resolve_policy("dlib_resnet", "always").treatment(10.0, key),
              p.treatment(50.0, {**key, "fit_sha256": ["c", "b"]}),
              resolve_policy("dlib_resnet", fusion_weight=0.75).treatment(50.0, key),
              resolve_policy("mobilefacenet").treatment(50.0, key),
              dataclasses.replace(p, rule=dataclasses.replace(p.rule, view_yaws=(45.0,))).treatment(50.0, key)}
    assert len(others) == 5 and fused not in others and RAW_TREATMENT not in others
    # The threshold shift moves decisions, not embeddings.
    assert dataclasses.replace(p, rule=dataclasses.replace(p.rule, threshold_shift=0.5)).treatment(50.0, key) == fused
    assert resolve_policy("dlib_resnet", "never").treatment(80.0, key) == RAW_TREATMENT


def test_a_fingerprint_of_a_one_view_rule_is_the_one_galleries_recorded_before():
    """Galleries saved before the policy module recorded "auto:<fingerprint>" for fused templates;
    the same rule and views give the same fingerprint now (so they are not all reported stale)."""
    import hashlib

    key = {"view": "3d-render", "weights_sha256": None, "fit_sha256": ["a", "b"]}
    p = Policy("auto", "m", "3d", AutoRule(30.0, 0.75, 0.0173, view_yaws=(45.0,)))
    old = {"mode": "auto", **key, "yaw_threshold": 30.0, "fusion_weight": 0.75, "view_yaw": 45.0}
    assert p.treatment(50.0, key) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]


def test_rules_come_from_a_validated_data_file(tmp_path):
    """The rules are data: each measured row with the split, command and figures that chose it; a
    malformed or out-of-range file is refused with a typed error, never half-read."""
    data = json.loads(RULES_FILE.read_text())
    assert data["schema"] == 2
    for row in data["rules"]:
        if row.get("measured", True):
            assert row["split"].startswith("tune") and row["chosen_by"] and row["figures"], row["embedder"]
    assert load_rules() == shipped_rules()
    bad = tmp_path / "rules.json"
    good_row = {"embedder": "x", "views": ["3d"], "yaw_threshold": 30, "fusion_weight": 0.5, "view_yaws": [0]}
    for text in ("{", json.dumps({"schema": 1, "rules": {}}), json.dumps({"schema": 2, "rules": {}}),
                 json.dumps({"schema": 2, "rules": [{**good_row, "yaw_threshold": 130}]}),
                 json.dumps({"schema": 2, "rules": [{**good_row, "views": ["photo"]}]}),
                 json.dumps({"schema": 2, "rules": [{k: v for k, v in good_row.items() if k != "view_yaws"}]}),
                 json.dumps({"schema": 2, "rules": [good_row, good_row]}),
                 json.dumps({"schema": 2, "rules": [{**good_row, "threshold_shift": 2}]})):
        bad.write_text(text)
        with pytest.raises(pifr.InvalidPolicyError):
            load_rules(bad)


def test_research_proposes_a_new_file_with_its_provenance(tmp_path):
    rules = shipped_rules()
    new = rules.with_rule("sface", ["3d", "refined"], AutoRule(25.0, 0.6, 0.02, view_yaws=(30.0,)),
                          split="tune: CFP 351-400", chosen_by="python -m research.view_ensemble", figures="...")
    out = tmp_path / "proposed.json"
    new.save(out)
    back = load_rules(out)
    assert back.find("sface") == AutoRule(25.0, 0.6, 0.02, view_yaws=(30.0,))
    assert back.find("dlib_resnet") == rules.find("dlib_resnet") and len(back.entries) == len(rules.entries)
    assert [e for e in back.entries if e.embedder == "sface"][0].provenance["split"] == "tune: CFP 351-400"
    assert isinstance(back, RuleSet) and rules.find("sface") == rule_for("sface")  # the shipped set is untouched
