"""pifr/_provenance.py: the commit recorded in run.json and benchmark records."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest


SRC = Path(__file__).resolve().parents[2] / "pifr" / "_provenance.py"


def _load_copy(dest: Path):
    dest.parent.mkdir(parents=True)
    shutil.copy(SRC, dest)
    spec = importlib.util.spec_from_file_location(f"prov_{abs(hash(dest))}", dest)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_checkout_commit_dirty_flag_and_installed_copy_in_a_foreign_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("PIFR_COMMIT", raising=False)
    repo = tmp_path / "checkout"
    prov = _load_copy(repo / "pifr" / "_provenance.py")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "x")
    head = _git(repo, "rev-parse", "HEAD")
    assert prov.source_commit() == head and prov.source_commit(short=True) == head[:len(prov.source_commit(short=True))]
    (repo / "pifr" / "_provenance.py").write_text(SRC.read_text() + "\n# edited\n")
    assert prov.source_commit() == head + "-dirty"
    # An installed copy inside some other project's repository must not claim that project's commit.
    other = tmp_path / "project"
    foreign = _load_copy(other / "venv" / "site-packages" / "pifr" / "_provenance.py")
    _git(other, "init", "-q")
    _git(other, "add", ".")
    _git(other, "commit", "-q", "-m", "y")
    assert foreign.source_commit() == "unknown"
    monkeypatch.setenv("PIFR_COMMIT", "9b92646")
    assert foreign.source_commit() == "9b92646"
