"""pifr.train.losses on synthetic tensors and random-init or shipped networks."""
from __future__ import annotations

import pytest
import torch

from pifr.alignment import DLIB_150, TPGAN_128
from pifr.models.tpgan import Generator
from pifr.train import losses as L


FRONTAL_LM = torch.tensor(TPGAN_128.points, dtype=torch.float32)


def _batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 128, 128, generator=g) * 2 - 1, FRONTAL_LM.expand(b, 5, 2).clone()


def test_losses_zero_iff_identical():
    x, _ = _batch()
    y = torch.rand_like(x) * 2 - 1
    out_same = {"img128": x, "img64": torch.nn.functional.interpolate(x, size=64, mode="area"),
                "img32": torch.nn.functional.interpolate(x, size=32, mode="area")}
    assert float(L.pixel_loss(out_same, x)) == pytest.approx(0.0, abs=1e-7)
    out_diff = dict(out_same, img128=y)
    assert float(L.pixel_loss(out_diff, x)) > 0
    flat = torch.zeros(1, 3, 16, 16)
    assert float(L.tv_loss(flat)) == 0 and float(L.tv_loss(x)) > 0


def test_pixel_loss_sample_weights_leave_weighted_out_samples_without_gradient():
    x, _ = _batch()
    y = (torch.rand_like(x) * 2 - 1).requires_grad_()
    out = {"img128": y, "img64": torch.nn.functional.interpolate(y, size=64, mode="area"),
           "img32": torch.nn.functional.interpolate(y, size=32, mode="area")}
    ones = torch.ones(len(x))
    with torch.no_grad():
        assert float(L.pixel_loss(out, x, sample_weight=ones)) == pytest.approx(float(L.pixel_loss(out, x)), rel=1e-6)
    w = torch.zeros(len(x))
    w[0] = 1
    L.pixel_loss(out, x, sample_weight=w).backward()
    assert y.grad[0].abs().sum() > 0 and float(y.grad[1:].abs().sum()) == 0


@pytest.mark.parametrize("space", ["plain", "laplacian"])
def test_symmetry_loss_zero_on_mirror_symmetric(space):
    x, _ = _batch()
    sym = torch.cat([x[..., :64], x[..., :64].flip(3)], 3)
    assert float(L.symmetry_loss(sym, space)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.symmetry_loss(x, space)) > 0


def test_adversarial_losses():
    big = torch.full((2, 1, 4, 4), 20.0)
    assert float(L.g_adversarial_loss(big)) < 1e-6 and float(L.g_adversarial_loss(-big)) > 10
    # With label smoothing, a perfect "real" logit is not the minimum: the target is 0.9.
    assert float(L.d_adversarial_loss(big, -big)) > float(L.d_adversarial_loss(torch.full_like(big, 2.2), -big))


def test_identity_features_warp_and_loss():
    from pifr.embedders import get_embedder

    net = get_embedder("dlib_resnet").module
    feats = L.IdentityFeatures(net, TPGAN_128, DLIB_150)
    x, _ = _batch()
    assert float(L.identity_loss(feats, x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.identity_loss(feats, x, x.flip(0))) > 0
    x.requires_grad_(True)
    feats(x)["embedding"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
