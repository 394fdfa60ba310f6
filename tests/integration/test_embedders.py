"""Embedders on real LFW pairs, and the dlib port against dlib itself."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.detection import locate_face
from pifr.embedders import get_embedder
from pifr.eval.datasets import lfw_pairs


@pytest.fixture(scope="module")
def dev_pairs(lfw):
    pairs = lfw_pairs(lfw, "pairsDevTrain.txt")
    same = [p for p in pairs if p.same][:20]
    diff = [p for p in pairs if not p.same][:20]
    return same + diff


@pytest.fixture()
def casia_weights(shared, monkeypatch):
    """The user-supplied CASIA-WebFace MobileFaceNet, found the way a user would: $PIFR_WEIGHTS_DIR."""
    d = shared / "models" / "mobilefacenet"
    if not (d / "xiaoccer_068.ckpt").is_file():
        pytest.skip("xiaoccer_068.ckpt not in the shared models")
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(d))
    return d / "xiaoccer_068.ckpt"


@pytest.mark.parametrize("name", ["dlib_resnet", "mobilefacenet", "sface"])
def test_lfw_pairs_decided_correctly(name, dev_pairs):
    emb = get_embedder(name)
    correct = 0
    for p in dev_pairs:
        a = pifr.embed(p.a, embedder=name)
        b = pifr.embed(p.b, embedder=name)
        assert a.shape == (emb.dim,) and abs(np.linalg.norm(a) - 1) < 1e-4
        correct += (float(a @ b) >= emb.threshold) == p.same
    assert correct / len(dev_pairs) >= 0.95, f"{name}: {correct}/{len(dev_pairs)}"


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


def test_sface_matches_opencvs_reference(shared, lfw):
    """The shipped fp16 torch SFace against OpenCV's own ``FaceRecognizerSF.feature`` on the
    original ONNX file (OpenCV images are BGR; it swaps them to RGB and feeds raw 0–255 values):
    the same vector on real aligned faces. Fed insightface's normalisation instead, the network
    gives unrelated vectors — the contract a registration must get right."""
    import cv2

    onnx = shared / "models" / "sface" / "face_recognition_sface_2021dec.onnx"
    if not onnx.is_file():
        pytest.skip("the SFace ONNX file is not in the shared models")
    ref_net = cv2.FaceRecognizerSF.create(str(onnx), "")
    emb = get_embedder("sface")
    crops = []
    for name in ("Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Alejandro_Toledo"):
        img, face = locate_face(lfw / name / f"{name}_0001.jpg", select="center")
        crops.append(emb.align(img, face))
    crops = np.stack(crops)
    ref = np.stack([ref_net.feature(np.ascontiguousarray(c[..., ::-1])).reshape(-1) for c in crops])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (emb.embed_crops(crops) * ref).sum(1)
    assert cos.min() >= 0.999, cos
    import torch

    x = torch.from_numpy(crops.astype(np.float32)).permute(0, 3, 1, 2)
    wrong = emb.module((x - 127.5) / 127.5).detach().numpy()  # insightface's (x − 127.5) / 127.5 before the network
    wrong /= np.linalg.norm(wrong, axis=1, keepdims=True)
    assert np.abs((wrong * ref).sum(1)).max() < 0.3  # measured −0.05…0.09: unrelated vectors
