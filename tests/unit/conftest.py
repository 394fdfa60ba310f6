"""The unit tier: offline, no ``../shared``. Networks are random-init where their weights do not
matter, or the shipped ones; images are synthetic or the shipped examples (``examples/images``)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(autouse=True)
def _no_shared_data(monkeypatch, tmp_path_factory):
    """Point the shared-data root at an empty folder: a unit test that reached for ``../shared``
    fails here instead of passing on a machine that happens to have it."""
    monkeypatch.setenv("PIFR_SHARED", str(tmp_path_factory.getbasetemp() / "no-shared-data-in-unit-tests"))


@pytest.fixture(scope="session")
def gen_file(tmp_path_factory):
    """A tiny random-init TP-GAN generator file (width 0.125), as ``pifr-train`` writes one."""
    import torch
    from safetensors.torch import save_file

    from pifr.models.tpgan import Generator

    torch.manual_seed(0)
    g = Generator(width=0.125)
    p = tmp_path_factory.mktemp("gen") / "generator.safetensors"
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(p),
              metadata={"config": json.dumps({"width": 0.125, "noise_dim": 100, "id_classes": 0, "local": True})})
    return p


@pytest.fixture(scope="session")
def examples_pack(tmp_path_factory):
    """A training pack from the shipped example photos: identity 1 (Mitchell: a frontal, a frontal
    with sunglasses, one turned ~50°) and 2 (a frontal and one turned), as profile→frontal pairs."""
    from pifr.train.data import build_pack

    from tests.conftest import EXAMPLES

    items = [(str(EXAMPLES / f), ident, frontal, -1) for f, ident, frontal in (
        ("mitchell_frontal.png", 1, True), ("mitchell_sunglasses.png", 1, True), ("mitchell_turned.png", 1, False),
        ("night_frontal.png", 2, True), ("night_turned.png", 2, False))]
    p = tmp_path_factory.mktemp("pack") / "examples.npz"
    build_pack(items, {"source": "examples/images"}, progress=False).save(p)
    return p
