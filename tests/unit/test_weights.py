"""Weights registry: shipped files match the manifest; wrong hashes and corrupt files are refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pifr.errors import UnknownModelError, WeightsChecksumError, WeightsFormatError, WeightsNotFoundError
from pifr.weights import get_spec, list_weights, load_state_dict, resolve, sha256_file


ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_file_matches_its_manifest_entry():
    manifest = json.loads((ROOT / "weights" / "manifest.json").read_text())
    shipped = [e for e in manifest["weights"] if e["location"] == "shipped"]
    assert shipped
    for e in shipped:
        p = ROOT / "weights" / e["file"]
        assert p.is_file(), e["file"]
        assert sha256_file(p) == e["sha256"], e["file"]
        for field in ("source", "licence", "training_data", "model_card"):
            assert e[field], f"{e['name']}: manifest field {field} is empty"
        assert (ROOT / e["model_card"]).is_file(), e["model_card"]


def test_sha_mismatch_is_rejected(tmp_path, monkeypatch):
    spec = get_spec("mobilefacenet")
    bad = tmp_path / spec.file
    shutil.copy(ROOT / "weights" / spec.file, bad)
    with open(bad, "r+b") as f:
        f.seek(5000)
        b = f.read(1)
        f.seek(5000)
        f.write(bytes([b[0] ^ 0xFF]))
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsChecksumError):
        resolve("mobilefacenet")
    # An explicit path is checked too.
    monkeypatch.delenv("PIFR_WEIGHTS_DIR")
    with pytest.raises(WeightsChecksumError):
        resolve("mobilefacenet", path=bad)


def test_env_dir_takes_precedence(tmp_path, monkeypatch):
    spec = get_spec("retinaface_mnet025")
    shutil.copy(ROOT / "weights" / spec.file, tmp_path / spec.file)
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(tmp_path))
    assert resolve("retinaface_mnet025")[1] == tmp_path / spec.file


def test_corrupt_unverified_file_gives_format_error(tmp_path):
    p = tmp_path / "LightCNN_29Layers_V2_checkpoint.pth.tar"
    p.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightsFormatError):
        load_state_dict("lightcnn29_v2", path=p)


def test_pickled_objects_are_not_executed(tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "LightCNN_29Layers_V2_checkpoint.pth.tar"
    p.write_bytes(pickle.dumps({"state_dict": Evil()}, protocol=2))  # torch.save's protocol
    with pytest.raises(WeightsFormatError):
        load_state_dict("lightcnn29_v2", path=p)
    assert "pwned" not in capsys.readouterr().out  # refused before the call ran


def test_mismatched_architecture_is_refused(tmp_path):
    from pifr.models.mobilefacenet import MobileFaceNet
    from pifr.weights import load_into

    with pytest.raises(WeightsFormatError):
        load_into(MobileFaceNet(), "retinaface_mnet025")


def test_unknown_and_missing():
    with pytest.raises(UnknownModelError):
        get_spec("nope")
    with pytest.raises(WeightsNotFoundError):
        resolve("facenet_vggface2", path="/nonexistent/file.pt")
    assert {s.name for s in list_weights("embedder")} >= {"dlib_resnet", "mobilefacenet"}
