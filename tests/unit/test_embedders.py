"""Embedders offline: architectures, errors, the registry table, batches with bad items."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pifr
from pifr.embedders import get_embedder, list_embedders

from tests.conftest import EXAMPLES

A, A2, A_TURNED = EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_sunglasses.png", EXAMPLES / "mitchell_turned.png"
B, B_TURNED, C = EXAMPLES / "night_frontal.png", EXAMPLES / "night_turned.png", EXAMPLES / "phoebe_frontal.png"


def test_dlib_port_is_differentiable():
    emb = get_embedder("dlib_resnet")
    x = torch.rand(2, 3, 150, 150, requires_grad=True) * 255
    x.retain_grad()
    feats = emb.module.feature_maps(x)
    (feats["embedding"].sum() + feats["s3"].mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lightcnn_architecture_loads_official_layout(tmp_path, monkeypatch):
    from pifr.models.lightcnn import LightCNN29v2

    net = LightCNN29v2()
    n = sum(p.numel() for p in net.parameters())
    assert 9e6 < n < 13e6  # the published Light-CNN-29 v2 has ~10-12 M parameters without its classifier
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    sd["module.fc2.weight"] = torch.zeros(10, 256)  # the training classifier, dropped on load
    path = tmp_path / "LightCNN_29Layers_V2_checkpoint.pth.tar"
    torch.save({"epoch": 1, "state_dict": sd}, path)
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(tmp_path))
    emb = get_embedder("lightcnn29_v2", weights_path=str(path))
    out = emb.embed_crops(np.zeros((1, 128, 128, 3), np.uint8))
    assert out.shape == (1, 256)
    x = torch.rand(1, 3, 128, 128) * 255
    assert torch.allclose(emb.module(x), net(0.299 * x[:, :1] / 255 + 0.587 * x[:, 1:2] / 255 + 0.114 * x[:, 2:] / 255), atol=1e-4)


def test_facenet_architecture_loads_release_layout(tmp_path):
    pytest.importorskip("facenet_pytorch")
    from pifr.models.facenet import FaceNet

    net = FaceNet()
    sd = dict(net.net.state_dict())
    sd["logits.weight"] = torch.zeros(8631, 512)
    sd["logits.bias"] = torch.zeros(8631)
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(sd, path)
    emb = get_embedder("facenet_vggface2", weights_path=str(path))
    assert emb.embed_crops(np.zeros((2, 160, 160, 3), np.uint8)).shape == (2, 512)


def test_missing_user_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(pifr.WeightsNotFoundError) as e:
        get_embedder("lightcnn29_v2")
    assert "LightCNN_29Layers_V2_checkpoint.pth.tar" in str(e.value)
    info = {i.name: i for i in list_embedders()}
    assert info["dlib_resnet"].available and info["mobilefacenet"].available
    assert not info["facenet_vggface2"].available and not info["lightcnn29_v2"].available
    assert info["dlib_resnet"].calibrated and not info["lightcnn29_v2"].calibrated


def test_wrong_crop_shape_rejected():
    with pytest.raises(pifr.ShapeError):
        get_embedder("mobilefacenet").embed_crops(np.zeros((1, 150, 150, 3), np.uint8))


def test_embedder_spec_is_the_public_view_of_the_table():
    from pifr.embedders import Embedder, embedder_spec, list_embedders

    for info in list_embedders():
        spec = embedder_spec(info.name)
        assert (spec.template.name, spec.dim, spec.threshold) == (info.template, info.dim, info.threshold)
    with pytest.raises(pifr.UnknownModelError):
        embedder_spec("nope")
    copy = Embedder(embedder_spec("mobilefacenet"))  # uncached, its own module
    assert copy.module is not pifr.get_embedder("mobilefacenet").module
    net, spec = embedder_spec("mobilefacenet").load_network()
    assert spec.name == "mobilefacenet" and net.training


def test_one_bad_image_does_not_stop_a_batch(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    blank = np.zeros((100, 100, 3), np.uint8)
    res = pifr.embed_many([A, bad, blank, B])
    assert [r.ok for r in res] == [True, False, False, True]
    assert isinstance(res[1].error, pifr.InvalidImageError) and isinstance(res[2].error, pifr.NoFaceError)
    assert np.allclose(res[0].embedding, pifr.embed(A))
