"""The one released ONNX recogniser at hand (foamliu's MobileFaceNet, in ../shared) registered by
path gives pifr's own embeddings; the offline ONNX tests are in tests/unit/test_onnx_embedder.py."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.embedders import get_embedder

from tests.unit.test_onnx_embedder import IMAGENET_MEAN, IMAGENET_STD, _cos, crops, fresh_registry  # noqa: F401 - fixtures

pytest.importorskip("onnxruntime")


def test_released_mobilefacenet_onnx_gives_pifrs_embeddings(shared, crops):
    """foamliu's own ONNX release (fixed batch 1, ImageNet mean/std, RGB), registered by path,
    embeds real aligned faces as pifr's `mobilefacenet` does."""
    path = shared / "models" / "mobilefacenet" / "foamliu_MobileFaceNet.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not in the shared models")
    pifr.register_embedder("mfn_release", path, mean=IMAGENET_MEAN, std=IMAGENET_STD, channels="RGB")
    emb = get_embedder("mfn_release", device="cpu")
    assert emb.batch == 1 and emb.dim == 128 and emb.template is pifr.ARCFACE_112
    ref = get_embedder("mobilefacenet", device="cpu").embed_crops(crops)
    got = emb.embed_crops(crops)
    assert got.shape == ref.shape and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert _cos(got, ref).min() >= 0.9999
    # The registration's channel order is applied: registered as a BGR model, the tinted faces embed differently.
    pifr.register_embedder("mfn_release_wrong", path, mean=IMAGENET_MEAN, std=IMAGENET_STD, channels="BGR")
    assert _cos(get_embedder("mfn_release_wrong", device="cpu").embed_crops(crops), ref)[len(crops) // 2:].min() < 0.999
