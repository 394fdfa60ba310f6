"""The ``pifr`` command line on the shipped example photos (and a random-init generator)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pifr
from pifr.cli import main

from tests.conftest import EXAMPLES

A, A2, A_TURNED = EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_sunglasses.png", EXAMPLES / "mitchell_turned.png"
B, B_TURNED, C = EXAMPLES / "night_frontal.png", EXAMPLES / "night_turned.png", EXAMPLES / "phoebe_frontal.png"


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


def test_cli_verify_and_detect(capsys, tmp_path):
    assert main(["verify", str(A), str(A2), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["same"] is True
    assert main(["verify", str(A), str(B), "--exit-code"]) == 1
    capsys.readouterr()
    bad = tmp_path / "x.jpg"
    bad.write_text("nope")
    assert main(["detect", str(A), str(bad)]) == 2
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(lines[0]["faces"]) == 1 and "error" in lines[1]
    assert main(["models"]) == 0
    assert "dlib_resnet" in capsys.readouterr().out


def test_cli_frontalizes_a_folder_in_batches_and_reports_bad_files(gen_file, tmp_path, capsys):
    import shutil

    from PIL import Image

    from pifr.cli import main

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLES / "night_turned.png", src / "a.png")
    shutil.copy(EXAMPLES / "mitchell_turned.png", src / "sub" / "b.png")
    (src / "c.jpg").write_bytes(b"not an image")
    dst = tmp_path / "out"
    rc = main(["frontalize", str(src), "-o", str(dst), "--weights", str(gen_file), "--batch-size", "2"])
    assert rc == 2  # one bad file: reported, the others written
    err = capsys.readouterr().err
    assert "c.jpg: InvalidImageError" in err
    for rel in ("a.png", "sub/b.png"):
        im = np.asarray(Image.open(dst / rel))
        want = pifr.frontalize(src / rel, weights=gen_file).image
        assert im.shape == (128, 128, 3) and np.abs(im.astype(int) - want.astype(int)).max() <= 1
    assert not (dst / "c.png").exists()
    assert main(["frontalize", str(src / "a.png"), "-o", str(tmp_path / "one.png"), "--weights", str(gen_file)]) == 0
    assert main(["frontalize", str(src / "a.png"), "-o", str(tmp_path / "x.png"),
                 "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "WeightsNotFoundError" in capsys.readouterr().err


def test_cli_rotate_writes_each_face_and_reports_bad_files(tmp_path, capsys):
    import shutil

    from PIL import Image

    from pifr.cli import main

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "night_frontal.png", src / "a.png")
    (src / "b.jpg").write_bytes(b"not an image")
    assert main(["rotate", str(src), "--yaw", "60", "-o", str(tmp_path / "out")]) == 2
    assert "b.jpg: InvalidImageError" in capsys.readouterr().err
    im = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert np.array_equal(im, pifr.rotate(src / "a.png", yaw=60).image)
    assert not (tmp_path / "out" / "b.png").exists()
    with pytest.raises(SystemExit):  # argparse: --yaw is required
        main(["rotate", str(src / "a.png"), "-o", str(tmp_path / "x.png")])


def test_gallery_list_marks_stale_templates(monkeypatch, tmp_path, capsys):
    from tests.unit.test_gallery import _fake_policy, _photo, _retuned

    _fake_policy(monkeypatch)
    g = pifr.Gallery()
    g.enroll("alice", [_photo(1), _photo(101)])  # one frontal (raw), one turned (fused)
    g.enroll("carol", [_photo(2)])
    p = tmp_path / "g.gallery"
    g.save(p)
    assert main(["gallery", "list", "--gallery", str(p)]) == 0
    out = capsys.readouterr().out
    assert " stale" not in out and "again" not in out and "alice\t2\n" in out
    _retuned(monkeypatch)
    assert main(["gallery", "list", "--gallery", str(p)]) == 0
    out = capsys.readouterr().out
    assert "alice\t2\t1 stale" in out and "carol\t1\n" in out and "enroll their photos again" in out
