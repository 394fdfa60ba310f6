"""The licence table `pifr models` prints comes from the manifest's terms, for every entry."""
from __future__ import annotations

from pifr import licences
from pifr.weights import list_weights

TERMS = {"open", "research-only", "unstated", "none"}


def test_every_manifest_entry_states_its_terms():
    for spec in list_weights():
        assert set(spec.terms) == {"weights", "training_data"}, spec.name
        assert set(spec.terms.values()) <= TERMS, (spec.name, spec.terms)


def test_default_pipeline_parts_and_what_is_research_only():
    parts = licences.default_components("sface")
    names = [c.spec.name for c in parts]
    assert names[0] == "retinaface_mnet025" and "sface" in names and "face3d_bfm" in names
    # The Basel Face Model's academic terms make the 3D views research-only; SFace's weights are not.
    by_name = {c.spec.name: c for c in parts}
    assert by_name["face3d_bfm"].research_only and not by_name["sface"].research_only
    opened = licences.open_embedders()
    assert "sface" in opened and "mobilefacenet" not in opened  # MS1M's non-commercial terms


def test_cli_models_prints_the_table(capsys):
    from pifr.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "research-only parts: " in out and "face3d_bfm" in out and 'frontalize="never"' in out
