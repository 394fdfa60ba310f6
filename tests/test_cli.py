"""The ``pifr`` command line passes the same frontalization options the library takes."""
from __future__ import annotations

import pytest

import pifr
from pifr.cli import main

from conftest import EXAMPLES


def test_verify_takes_the_policy_options(monkeypatch):
    import pifr.verification as V

    got = {}

    def fake(a, b, **kw):
        got.update(kw)
        raise pifr.NoFaceError("stop here")

    monkeypatch.setattr(V, "verify", fake)
    assert main(["verify", "a.png", "b.png", "--frontalize", "auto", "--frontalizer", "g.safetensors",
                 "--yaw-threshold", "30", "--fusion-weight", "0.5"]) == 2
    assert (got["frontalize"], got["frontalizer"], got["yaw_threshold"], got["fusion_weight"]) == ("auto", "g.safetensors", 30.0, 0.5)
    got.clear()
    main(["verify", "a.png", "b.png"])
    assert (got["frontalize"], got["yaw_threshold"], got["fusion_weight"]) == ("auto", None, None)  # the default: the measured rule


def test_verify_refuses_a_bad_mode_or_weight(capsys):
    with pytest.raises(SystemExit):  # argparse: not one of the modes
        main(["verify", "a.png", "b.png", "--frontalize", "Auto"])
    assert main(["verify", str(EXAMPLES / "night_frontal.png"), str(EXAMPLES / "night_turned.png"),
                 "--frontalize", "auto", "--fusion-weight", "3"]) == 2
    assert "InvalidPolicyError" in capsys.readouterr().err


def test_frontalize_takes_the_method(monkeypatch, tmp_path):
    import pifr.frontalization as F

    got = {}

    def fake(imgs, **kw):
        got.update(kw)
        return [pifr.NoFaceError("none") for _ in imgs]

    monkeypatch.setattr(F, "frontalize", fake)
    assert main(["frontalize", str(EXAMPLES / "night_turned.png"), "-o", str(tmp_path / "o.png"),
                 "--method", "hassner", "--weights", "model3Ddlib.mat"]) == 2
    assert got["method"] == "hassner" and got["weights"] == "model3Ddlib.mat"
