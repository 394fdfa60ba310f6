"""Render refiners (pifr.models.refiner): shapes, conditioning, local patches at the target landmarks."""
import pytest
import torch

from pifr.models.refiner import PARTS, Refiner, RefinerConfig, heatmaps, landmarks5, part_heatmaps
from pifr.models.tpgan import crop_patches, patch_origins, paste_at


def _batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    render = torch.rand(b, 3, 128, 128, generator=g) * 2 - 1
    mask = (torch.rand(b, 1, 128, 128, generator=g) > 0.3).float()
    lm = torch.rand(b, 68, 2, generator=g) * 70 + 29
    return render, mask, lm


def test_heatmaps_peak_at_the_points():
    lm = torch.tensor([[[10.5, 20.5], [100.5, 64.5]]])
    h = heatmaps(lm, 128, 2.0)
    assert h.shape == (1, 2, 128, 128)
    for k, (x, y) in enumerate([(10, 20), (100, 64)]):
        assert int(h[0, k].argmax()) == y * 128 + x
        assert float(h[0, k].max()) == pytest.approx(1.0)
    parts = part_heatmaps(torch.rand(1, 68, 2) * 128)
    assert parts.shape == (1, len(PARTS), 128, 128)


def test_landmarks5_are_eye_centres_nose_and_mouth_corners():
    lm = torch.arange(68 * 2, dtype=torch.float32).view(1, 68, 2)
    p5 = landmarks5(lm)
    assert torch.equal(p5[0, 0], lm[0, 36:42].mean(0)) and torch.equal(p5[0, 2], lm[0, 30])
    assert torch.equal(p5[0, 3], lm[0, 48]) and torch.equal(p5[0, 4], lm[0, 54])


def test_paste_at_inverts_an_on_grid_crop():
    img = torch.rand(2, 3, 128, 128) * 2 - 1
    lm5 = landmarks5(_batch()[2])
    crops = crop_patches(img, lm5, on_grid=True)
    pasted = paste_at({k: v + 1 for k, v in crops.items()}, patch_origins(lm5)) - 1
    covered = pasted > -1
    assert covered.float().mean() > 0.1
    assert torch.allclose(pasted[covered], img[covered], atol=1e-5)


@pytest.mark.parametrize("arch", ["tpgan", "spade"])
def test_refiner_shapes_gradients_and_config_round_trip(arch):
    cfg = RefinerConfig(arch=arch, width=0.0625, residual=False)
    net = Refiner(cfg)
    render, mask, lm = _batch()
    out = net(render, mask, lm)
    assert out["img128"].shape == (2, 3, 128, 128)
    assert float(out["img128"].detach().abs().max()) <= 1.0
    out["img128"].mean().backward()
    first = next(p for p in net.parameters() if p.requires_grad)
    assert first.grad is not None and float(first.grad.abs().sum()) > 0
    assert RefinerConfig.from_dict(cfg.to_dict()) == cfg


def test_refiner_reads_its_condition():
    """The landmarks are an input: moving them changes the output (the heatmaps reach the network)."""
    torch.manual_seed(0)
    net = Refiner(RefinerConfig(arch="tpgan", width=0.0625, residual=False)).eval()
    render, mask, lm = _batch(1)
    with torch.no_grad():
        a = net(render, mask, lm)["img128"]
        b = net(render, mask, lm + 6.0)["img128"]
    assert float((a - b).abs().mean()) > 1e-4


@pytest.mark.parametrize("arch", ["tpgan", "spade"])
def test_a_residual_refiner_starts_as_the_render(arch):
    """residual=True: before training the output is the render on its mask and 0 (grey) beyond,
    and the last layer, the only one with a gradient at the start, gets one."""
    net = Refiner(RefinerConfig(arch=arch, width=0.0625))
    render, mask, lm = _batch()
    out = net(render, mask, lm)["img128"]
    assert torch.allclose(out, render * mask, atol=1e-6)
    ((out - render) ** 2).mean().backward()
    last = net.net.rgb128[0] if arch == "tpgan" else net.net.rgb[1]
    assert float(last.weight.grad.abs().sum()) > 0


def test_refiner_rejects_bad_shapes_and_configs():
    net = Refiner(RefinerConfig(width=0.0625))
    render, mask, lm = _batch(1)
    with pytest.raises(ValueError):
        net(render, mask, lm[:, :5])
    with pytest.raises(ValueError):
        RefinerConfig(arch="unet")
    with pytest.raises(ValueError):
        RefinerConfig.from_dict({"arch": "tpgan", "depth": 3})


def test_save_and_read_round_trip(tmp_path):
    from pifr.models.refiner import read_refiner, save_refiner

    net = Refiner(RefinerConfig(arch="tpgan", width=0.0625)).eval()
    save_refiner(net, tmp_path / "r.safetensors", {"steps": 3})
    back, meta = read_refiner(tmp_path / "r.safetensors")
    assert meta == {"steps": 3} and back.config == net.config
    render, mask, lm = _batch(1)
    with torch.no_grad():
        a, b = net(render, mask, lm)["img128"], back(render, mask, lm)["img128"]
    assert float((a - b).abs().max()) < 0.02  # fp16 storage
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a refiner"):
        read_refiner(tmp_path / "other.safetensors")
