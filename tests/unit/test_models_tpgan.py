"""The TP-GAN networks (random init): shapes, size, gradients, skips, config, patches."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from pifr.alignment import TPGAN_128
from pifr.models.tpgan import PATCHES, BEGANDiscriminator, Discriminator, Generator, count_parameters, crop_patches, paste_max
from pifr.train import losses as L


FRONTAL_LM = torch.tensor(TPGAN_128.points, dtype=torch.float32)


def _batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 128, 128, generator=g) * 2 - 1, FRONTAL_LM.expand(b, 5, 2).clone()


@pytest.mark.parametrize("width", [0.25, 0.5])
def test_output_shapes(width):
    g = Generator(width=width, id_classes=7).eval()
    x, lm = _batch()
    with torch.no_grad():
        out = g(x, lm)
    assert out["img128"].shape == (2, 3, 128, 128)
    assert out["img64"].shape == (2, 3, 64, 64) and out["img32"].shape == (2, 3, 32, 32)
    assert out["identity"].shape == (2, 256) and out["logits"].shape == (2, 7)
    for name, (h, w), _ in PATCHES:
        assert out["patches"][name].shape == (2, 3, h, w)
    for k in ("img128", "img64", "img32"):
        assert out[k].abs().max() <= 1.0
    assert Discriminator(width)(out["img128"]).shape == (2, 1, 4, 4)
    assert BEGANDiscriminator(width)(out["img128"]).shape == (2, 3, 128, 128)


def test_full_configuration_size():
    g = Generator(width=1.0)
    n = count_parameters(g)
    print(f"TP-GAN generator, width 1.0: {n / 1e6:.1f} M parameters (paper's code: ~157 M)")
    assert abs(n - 157e6) / 157e6 <= 0.10
    assert g.config.width == 1.0
    x, lm = _batch(1)
    with torch.no_grad():
        assert g.eval()(x, lm)["img128"].shape == (1, 3, 128, 128)


def test_gradients_reach_every_subnetwork():
    g = Generator(width=0.25)
    d = Discriminator(0.25)
    x, lm = _batch()
    out = g(x, lm)
    target = torch.rand_like(x) * 2 - 1
    loss = L.generator_loss(out, target, target_patches=crop_patches(target, lm), fake_logits=d(out["img128"])).total
    loss.backward()
    subnets = {"encoder": g.encoder, "decoder.fc": g.fc, "simple": g.simple32, "r8": g.r8, "r128": g.r128, "d": d,
               **{f"local.{k}": v for k, v in g.local.items()}}
    for name, m in subnets.items():
        grads = [p.grad for p in m.parameters() if p.requires_grad]
        assert grads and all(gr is not None for gr in grads), name
        assert sum(float(gr.abs().sum()) for gr in grads) > 0, name


@pytest.mark.parametrize("skips", [0, 8, 16])
def test_narrow_skips_cut_the_copy_path(skips, monkeypatch):
    """Below the paper's skips=128, the decoder sees the encoder's maps only up to `skips` px and
    no input image above it (the image is injected at 32, 64 and 128 px only): two inputs with the
    same identity code and the same low-resolution features must give the same output, while the
    paper's generator tells them apart."""
    torch.manual_seed(0)
    x, lm = _batch(2, seed=1)
    outs = {}
    for s in (skips, 128):
        g = Generator(width=0.125, local=False, skips=s).eval()
        assert g.config.skips == s
        enc = g.encoder.forward
        first = {}

        def fixed_code(inp, enc=enc, first=first):
            feats, ident = enc(inp)
            if not first:
                first.update(feats=feats, ident=ident)
            # Same identity code and same maps up to `skips` px as the first input; its own above.
            return {k: (first["feats"][k] if k <= skips else v) for k, v in feats.items()}, first["ident"]

        monkeypatch.setattr(g.encoder, "forward", fixed_code)
        with torch.no_grad():
            a = g(x[:1], noise=torch.zeros(1, g.noise_dim))["img128"]
            b = g(x[1:], noise=torch.zeros(1, g.noise_dim))["img128"]
        outs[s] = (a - b).abs().max().item()
    assert outs[skips] == 0.0
    assert outs[128] > 1e-3
    assert count_parameters(Generator(width=0.125, skips=skips)) < count_parameters(Generator(width=0.125))


def test_generator_config_round_trip_and_bad_skips():
    g = Generator(width=0.125, skips=8)
    g2 = Generator.from_config(dataclasses.asdict(g.config))
    assert g2.config == g.config
    assert g2.load_state_dict(g.state_dict()) is not None
    assert Generator.from_config({"width": 0.125}).config.skips == 128  # files from before `skips`: the paper
    with pytest.raises(ValueError, match="skips"):
        Generator(width=0.125, skips=100)
    with pytest.raises(ValueError, match="unknown"):
        Generator.from_config({"width": 0.125, "bottleneck": 1})


def test_patch_crop_and_paste_are_consistent():
    # A smooth image (ramps), so a sub-pixel difference between landmark and paste centre is tiny.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
    x = torch.stack([xx, yy, (xx + yy) / 2])[None]
    lm = FRONTAL_LM[None]
    crops = crop_patches(x, lm)
    # Frontal landmarks at the template: cropping then pasting the crops returns the input there.
    canvas = paste_max({k: v for k, v in crops.items()})
    _, (h, w), (cy, cx) = PATCHES[0]
    top, left = int(round(cy - h / 2)), int(round(cx - w / 2))
    assert torch.allclose(canvas[0, :, top + 5, left + 5], x[0, :, top + 5, left + 5], atol=0.05)
