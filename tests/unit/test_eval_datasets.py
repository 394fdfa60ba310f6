"""pifr.eval.datasets without the data: where the shared root is looked for."""
from __future__ import annotations

import pifr


def test_shared_root_defaults_to_the_folder_beside_the_repository(monkeypatch):
    from tests.conftest import ROOT

    from pifr.eval.datasets import shared_root

    monkeypatch.delenv("PIFR_SHARED", raising=False)
    assert shared_root() == ROOT.parent / "shared"
    monkeypatch.setenv("PIFR_SHARED", "/elsewhere")
    assert str(shared_root()) == "/elsewhere" and str(shared_root("/given")) == "/given"
