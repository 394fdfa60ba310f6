"""Embedders on real faces: LFW same/different pairs, the dlib port's parity with dlib itself,
architecture checks for the user-supplied networks, and clear errors for missing weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pifr
from pifr.eval.datasets import lfw_pairs
from pifr.embedders import get_embedder, list_embedders, locate_face


@pytest.fixture(scope="module")
def dev_pairs(lfw):
    pairs = lfw_pairs(lfw, "pairsDevTrain.txt")
    same = [p for p in pairs if p.same][:20]
    diff = [p for p in pairs if not p.same][:20]
    return same + diff


@pytest.mark.parametrize("name", ["dlib_resnet", "mobilefacenet"])
def test_lfw_pairs_decided_correctly(name, dev_pairs):
    emb = get_embedder(name)
    correct = 0
    for p in dev_pairs:
        a = pifr.embed(p.a, embedder=name)
        b = pifr.embed(p.b, embedder=name)
        assert a.shape == (emb.dim,) and abs(np.linalg.norm(a) - 1) < 1e-4
        correct += (float(a @ b) >= emb.threshold) == p.same
    assert correct / len(dev_pairs) >= 0.95, f"{name}: {correct}/{len(dev_pairs)}"


@pytest.fixture()
def casia_weights(shared, monkeypatch):
    """The user-supplied CASIA-WebFace MobileFaceNet, found the way a user would: $PIFR_WEIGHTS_DIR."""
    d = shared / "models" / "mobilefacenet"
    if not (d / "xiaoccer_068.ckpt").is_file():
        pytest.skip("xiaoccer_068.ckpt not in the shared models")
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(d))
    return d / "xiaoccer_068.ckpt"


def test_casia_mobilefacenet_loads_its_checkpoint_and_decides_real_pairs(casia_weights, dev_pairs):
    """The paper-layout MobileFaceNet reads the Xiaoccer checkpoint (a training dict around the
    weights) strictly, verified by sha256, and decides LFW development pairs at its threshold;
    fed BGR instead of RGB it separates them less well (the channel order is part of its contract)."""
    emb = get_embedder("mobilefacenet_casia")
    assert emb.spec.sha256 and emb.spec.user_supplied
    crops = {}
    for p in dev_pairs:
        for f in (p.a, p.b):
            if f not in crops:
                img, face = locate_face(f, select="center")
                crops[f] = emb.align(img, face)
    a = emb.embed_crops(np.stack([crops[p.a] for p in dev_pairs]))
    b = emb.embed_crops(np.stack([crops[p.b] for p in dev_pairs]))
    same = np.array([p.same for p in dev_pairs])
    scores = (a * b).sum(1)
    assert np.mean((scores >= emb.threshold) == same) >= 0.95
    gap = scores[same].mean() - scores[~same].mean()
    bgr_a = emb.embed_crops(np.stack([crops[p.a][..., ::-1] for p in dev_pairs]))
    bgr_b = emb.embed_crops(np.stack([crops[p.b][..., ::-1] for p in dev_pairs]))
    bgr = (bgr_a * bgr_b).sum(1)
    assert bgr[same].mean() - bgr[~same].mean() < gap


def test_dlib_port_matches_dlib(lfw):
    dlib = pytest.importorskip("dlib")
    import face_recognition_models as frm

    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    port = get_embedder("dlib_resnet")
    cos = []
    for name in ("Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody"):
        img = pifr.load_image(lfw / name / f"{name}_0001.jpg")
        face = pifr.detect(img, yaw=False)[0]
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        chip = dlib.get_face_chip(img, sp(img, dlib.rectangle(x1, y1, x2, y2)), size=150, padding=0.25)
        ref = np.array(rec.compute_face_descriptor(chip))
        mine = port.embed_crops(chip[None])[0]
        cos.append(float(mine @ ref / np.linalg.norm(ref)))
    assert min(cos) >= 0.999, cos


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
