"""Bring-your-own ONNX embedders (pifr.register_embedder / $PIFR_EMBEDDERS): parity with the torch
networks they were exported from, the input contract read from the model, the typed errors, the
threshold rule and the gallery's embedder check. Models are exported here with torch.onnx.export;
the one released ONNX file (foamliu's MobileFaceNet) comes from ../shared and skips without it."""
from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import pifr
from pifr import onnx_embedder, onnx_registry
from pifr.detection import locate_face
from pifr.embedders import get_embedder, list_embedders
from pifr.weights import sha256_file
from pifr.errors import (
    DependencyError,
    EmbedderConfigError,
    GalleryError,
    NoThresholdError,
    ShapeError,
    UnknownModelError,
    WeightsFormatError,
    WeightsNotFoundError,
)

from tests.conftest import EXAMPLES

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (pip install pifr[test])")

IMAGENET_MEAN = tuple(255 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(255 * s for s in (0.229, 0.224, 0.225))


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.delenv("PIFR_EMBEDDERS", raising=False)
    onnx_embedder._reset()
    yield
    onnx_embedder._reset()


# ----------------------------------------------------------------------------- models to export
class _Normalised(nn.Module):
    """pifr's MobileFaceNet (which normalises RGB [0, 255] itself) taking ImageNet-normalised input,
    the way such models are usually exported."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.net.std + self.net.mean)


class _IBlock(nn.Module):
    """insightface's iresnet basic block: BN → conv3×3 → BN → PReLU → conv3×3 (stride) → BN, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + self.down(x)


class TinyIResNet(nn.Module):
    """The iresnet layout (3×3 stem + PReLU, four stride-2 stages, BN → FC → BN-1d head) at a
    quarter width and one block per stage; takes (x − 127.5) / 127.5 in its own channel order."""

    def __init__(self, widths=(16, 32, 64, 128), dim: int = 512) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        cin, blocks = widths[0], []
        for w in widths:
            blocks.append(_IBlock(cin, w, 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.bn2 = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin * 7 * 7, dim)
        self.features = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.blocks(self.stem(x)))
        return self.features(self.fc(torch.flatten(x, 1)))


def _random_init(m: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics (so no layer is an identity), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
                mod.running_mean.copy_(0.1 * torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))
                mod.weight.copy_(0.5 + torch.rand(mod.num_features, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.num_features, generator=g))
    return m.eval()


def _export(module: nn.Module, path, size: int = 112, batch: int = 1, dynamic: bool = True):
    """TorchScript-based exporter (dynamo=False): it works offline and writes one self-contained file."""
    kw = {"dynamic_axes": {"input": {0: "batch"}, "embedding": {0: "batch"}}} if dynamic else {}
    with warnings.catch_warnings():  # the legacy exporter announces its deprecation on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, torch.zeros(batch, 3, size, size), str(path), dynamo=False,
                          input_names=["input"], output_names=["embedding"], **kw)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    mfn = pifr.get_embedder("mobilefacenet", device="cpu").module
    ires = _random_init(TinyIResNet(), seed=1)
    return {
        "mfn": mfn, "iresnet": ires, "dir": d,
        "mfn_dyn": _export(_Normalised(mfn).eval(), d / "mfn_dyn.onnx"),
        "mfn_b1": _export(_Normalised(mfn).eval(), d / "mfn_b1.onnx", dynamic=False),
        "ires_dyn": _export(ires, d / "ires_dyn.onnx"),
        "ires_b2": _export(ires, d / "ires_b2.onnx", batch=2, dynamic=False),
    }


@pytest.fixture(scope="module")
def crops():
    """ArcFace-aligned crops of the shipped example faces, each also tinted (the examples are
    grey, and channel order only matters in colour)."""
    emb = pifr.get_embedder("mobilefacenet", device="cpu")
    out = []
    for f in sorted(EXAMPLES.glob("*.png")):
        img, face = locate_face(f)
        out.append(emb.align(img, face))
    grey = np.stack(out)
    tint = np.clip(grey.astype(np.float32) * np.array([1.0, 0.75, 0.5]) + np.array([0, 10, 30]), 0, 255).astype(np.uint8)
    return np.concatenate([grey, tint], 0)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def _torch_iresnet(net: nn.Module, crops: np.ndarray, channels: str) -> np.ndarray:
    x = crops[..., ::-1] if channels == "BGR" else crops
    x = (torch.from_numpy(np.ascontiguousarray(x)).float().permute(0, 3, 1, 2) - 127.5) / 127.5
    with torch.inference_mode():
        return net(x).numpy()


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("key,batch", [("mfn_dyn", None), ("mfn_b1", 1)])
def test_exported_mobilefacenet_matches_torch_batched_or_not(models, crops, key, batch):
    pifr.register_embedder("mfn_export", models[key], mean=IMAGENET_MEAN, std=IMAGENET_STD)
    emb = get_embedder("mfn_export", device="cpu")
    assert emb.batch == batch and emb.dim == 128
    ref = get_embedder("mobilefacenet", device="cpu").embed_crops(crops)
    many = emb.embed_crops(crops)
    assert _cos(many, ref).min() >= 0.9999
    one = np.stack([emb.embed_crops(c)[0] for c in crops])
    assert np.abs(many - one).max() < 1e-5
    assert emb.embed_crops(crops, batch_size=3).shape == many.shape


@pytest.mark.parametrize("channels", ["RGB", "BGR"])
def test_iresnet_layout_with_insightface_normalisation(models, crops, channels):
    """The default registration is insightface's (x − 127.5) / 127.5; the channel order is the
    registration's, and it matters."""
    pifr.register_embedder("ires", models["ires_dyn"], channels=channels, normalization="insightface")
    emb = get_embedder("ires", device="cpu")
    assert emb.dim == 512 and emb.batch is None
    got = emb.embed_crops(crops)
    assert _cos(got, _torch_iresnet(models["iresnet"], crops, channels)).min() >= 0.9999
    other = "RGB" if channels == "BGR" else "BGR"
    tinted = slice(len(crops) // 2, None)
    assert _cos(got[tinted], _torch_iresnet(models["iresnet"], crops[tinted], other)).min() < 0.999


def test_fixed_batch_above_one_pads_the_last_chunk(models, crops):
    pifr.register_embedder("ires_b2", models["ires_b2"], normalization="insightface")
    pifr.register_embedder("ires_dyn", models["ires_dyn"], normalization="insightface")
    b2, dyn = get_embedder("ires_b2", device="cpu"), get_embedder("ires_dyn", device="cpu")
    assert b2.batch == 2
    odd = crops[:5]
    assert np.abs(b2.embed_crops(odd) - dyn.embed_crops(odd)).max() < 1e-5


def test_external_data_is_covered_by_the_recorded_sha256(models, crops, tmp_path):
    """Weights stored beside the graph (``.onnx.data``, torch's newer exporter's default) load, and
    changing them changes the sha256 that run records and galleries check."""
    import onnx

    path = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(str(models["ires_dyn"])), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").is_file() and path.stat().st_size < 100_000
    pifr.register_embedder("ext", path, normalization="insightface")
    emb = get_embedder("ext", device="cpu")
    pifr.register_embedder("ires", models["ires_dyn"], normalization="insightface")
    assert np.abs(emb.embed_crops(crops) - get_embedder("ires", device="cpu").embed_crops(crops)).max() < 1e-5
    assert emb.sha256 != sha256_file(path)
    g = pifr.Gallery("ext", threshold=0.3, device="cpu")
    g.add_embeddings("alice", emb.embed_crops(crops[:1]))
    g.save(tmp_path / "g.gallery")
    data = np.fromfile(tmp_path / "ext.onnx.data", np.float32)
    data[-1] *= 1.5
    data.tofile(tmp_path / "ext.onnx.data")
    assert get_embedder("ext", device="cpu").sha256 != emb.sha256
    with pytest.raises(GalleryError, match="re-enroll"):
        pifr.Gallery.load(tmp_path / "g.gallery", device="cpu")
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(WeightsNotFoundError, match="ext.onnx.data"):
        get_embedder("ext", device="cpu")


# ----------------------------------------------------------------------------- typed errors
class _Rank4(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


class _IntOut(nn.Module):
    def forward(self, x):
        return torch.flatten(x, 1).argmax(dim=1, keepdim=True)


class _NaNOut(nn.Module):
    def forward(self, x):
        return torch.flatten(x, 1)[:, :8] * float("nan")


def test_contract_mismatches_are_typed_errors_naming_the_file(models, tmp_path):
    # Input size against the template: a 112 px model registered for the 128 px TP-GAN crop.
    pifr.register_embedder("wrong_size", models["ires_dyn"], template="tpgan_128", normalization="insightface")
    with pytest.raises(ShapeError, match=str(models["ires_dyn"].name)):
        get_embedder("wrong_size", device="cpu")
    for bad, what in ((_Rank4(), "2-D"), (_IntOut(), "float")):
        p = _export(bad.eval(), tmp_path / f"{type(bad).__name__}.onnx")
        pifr.register_embedder("bad", p, normalization="insightface")
        with pytest.raises(WeightsFormatError, match=f"{p.name}.*{what}"):
            get_embedder("bad", device="cpu")
    p = _export(_NaNOut().eval(), tmp_path / "nan.onnx")
    pifr.register_embedder("nan", p, normalization="insightface")
    with pytest.raises(WeightsFormatError, match="nan.onnx.*NaN"):
        get_embedder("nan", device="cpu").embed_crops(np.zeros((2, 112, 112, 3), np.uint8))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(models["ires_dyn"].read_bytes()[:5000])
    pifr.register_embedder("corrupt", corrupt, normalization="insightface")
    with pytest.raises(WeightsFormatError, match="corrupt.onnx"):
        get_embedder("corrupt", device="cpu")
    with pytest.raises(WeightsNotFoundError, match="absent.onnx"):
        pifr.register_embedder("absent", tmp_path / "absent.onnx", normalization="insightface")


def test_bad_registrations_and_crops(models):
    with pytest.raises(EmbedderConfigError, match="built-in"):
        pifr.register_embedder("mobilefacenet", models["ires_dyn"], normalization="insightface")
    with pytest.raises(EmbedderConfigError, match="channels"):
        pifr.register_embedder("x", models["ires_dyn"], channels="RGBA", normalization="insightface")
    with pytest.raises(EmbedderConfigError, match="mean"):
        pifr.register_embedder("x", models["ires_dyn"], mean=(127.5, 127.5), std=(1, 1, 1))
    with pytest.raises(EmbedderConfigError, match="std"):
        pifr.register_embedder("x", models["ires_dyn"], mean=(0, 0, 0), std=(1, 0, 1))
    with pytest.raises(UnknownModelError, match="not_registered"):
        get_embedder("not_registered")
    pifr.register_embedder("ires", models["ires_dyn"], normalization="insightface")
    with pytest.raises(ShapeError):
        get_embedder("ires", device="cpu").embed_crops(np.zeros((1, 128, 128, 3), np.uint8))


def test_normalisation_must_be_named_or_given(models):
    """No silent default: a model fed the wrong pixel convention gives garbage without an error, so
    a registration must name one (or give mean and std)."""
    with pytest.raises(EmbedderConfigError, match="insightface.*opencv|normalization"):
        pifr.register_embedder("x", models["ires_dyn"])
    with pytest.raises(EmbedderConfigError, match="not both"):
        pifr.register_embedder("x", models["ires_dyn"], normalization="opencv", mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(EmbedderConfigError, match="unknown normalization"):
        pifr.register_embedder("x", models["ires_dyn"], normalization="arcface")
    reg = pifr.register_embedder("x", models["ires_dyn"], normalization="opencv")
    assert (reg.mean, reg.std, reg.channels) == ((0, 0, 0), (1, 1, 1), "RGB")
    assert "normalization='opencv'" in onnx_registry.registration_line(reg, 0.3)
    reg = pifr.register_embedder("x", models["ires_dyn"], normalization="insightface", channels="BGR")
    assert reg.channels == "BGR" and reg.mean == (127.5,) * 3


def test_a_registration_carries_its_auto_rule_and_impostor_table(models, tmp_path):
    table = tmp_path / "imp.json"
    table.write_text(json.dumps({"far_per_pair_to_threshold": [[0.01, 0.31], [0.1, 0.2], [0.001, 0.4]]}))
    reg = pifr.register_embedder("x", models["ires_dyn"], normalization="insightface", impostor_table=str(table),
                                 auto_rule={"yaw_threshold": 30, "fusion_weight": 0.5, "view_yaws": [15, 30]})
    assert reg.auto_rule == (30.0, 0.5, (15.0, 30.0), 0.0)
    assert reg.impostor_table == ((0.1, 0.2), (0.01, 0.31), (0.001, 0.4))  # sorted by falling FAR
    for bad in ({"yaw_threshold": 30}, {"yaw_threshold": 95, "fusion_weight": 0.5},
                {"yaw_threshold": 30, "fusion_weight": 0.5, "view_yaws": ["x"]}, {"yaw": 30, "fusion_weight": 0.5}):
        with pytest.raises(EmbedderConfigError, match="auto_rule"):
            pifr.register_embedder("x", models["ires_dyn"], normalization="insightface", auto_rule=bad)
    for bad in ([[0.01, 0.3]], {"far_per_pair_to_threshold": [[2, 0.3], [0.1, 0.2]]}, str(tmp_path / "absent.json")):
        with pytest.raises(EmbedderConfigError, match="impostor table"):
            pifr.register_embedder("x", models["ires_dyn"], normalization="insightface", impostor_table=bad)


def test_missing_onnxruntime_is_a_dependency_error(models, monkeypatch):
    pifr.register_embedder("ires", models["ires_dyn"], normalization="insightface")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DependencyError, match="onnxruntime"):
        get_embedder("ires", device="cpu")


# ----------------------------------------------------------------------------- threshold, gallery, config
def test_no_threshold_is_invented(models):
    a, b = EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png"
    pifr.register_embedder("mfn_export", models["mfn_dyn"], mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with pytest.raises(NoThresholdError, match="calibrate.py --embedder mfn_export"):
        pifr.verify(a, b, embedder="mfn_export", device="cpu")
    with pytest.raises(NoThresholdError):  # said before any image is read or face detected
        pifr.verify(a.with_name("absent.png"), b, embedder="mfn_export", device="cpu")
    # A gallery of it ranks without a threshold (Match.accepted None) but refuses to decide.
    g = pifr.Gallery("mfn_export", device="cpu", frontalize="never")
    g.enroll("mitchell", [a])
    g.enroll("night", [EXAMPLES / "night_frontal.png"])
    top = g.identify(b, k=2)
    assert [m.identity for m in top][0] == "mitchell" and all(m.accepted is None for m in top)
    assert g.verify("mitchell", b).accepted is None
    with pytest.raises(NoThresholdError, match="ranks"):
        g.threshold
    info = {e.name: e for e in list_embedders()}["mfn_export"]
    assert not info.calibrated and np.isnan(info.threshold) and "calibrate.py" in info.reason
    # An explicit threshold decides; the score is the PyTorch network's.
    r = pifr.verify(a, b, embedder="mfn_export", threshold=0.2738, device="cpu", frontalize="never")
    ref = pifr.verify(a, b, embedder="mobilefacenet", device="cpu", frontalize="never")
    assert abs(r.score - ref.score) < 1e-3 and r.same == ref.same and r.threshold == 0.2738
    pifr.register_embedder("mfn_export", models["mfn_dyn"], mean=IMAGENET_MEAN, std=IMAGENET_STD, threshold=0.2738)
    assert pifr.verify(a, b, embedder="mfn_export", device="cpu").threshold == 0.2738


def test_a_registered_impostor_table_gives_the_gallery_its_operating_point(models, tmp_path):
    """A registration's impostor table is read as the shipped ones are: the threshold follows the
    gallery's size (1 − 0.99^(1/N) per comparison), strict where the table cannot resolve the rate."""
    table = {"far_per_pair_to_threshold": [[0.1, 0.1], [0.01, 0.2], [0.001, 0.3], [0.0001, 0.45]]}
    pifr.register_embedder("tabled", models["mfn_dyn"], mean=IMAGENET_MEAN, std=IMAGENET_STD, impostor_table=table)
    g = pifr.Gallery("tabled", device="cpu")
    rng = np.random.default_rng(0)
    g.add_embeddings("one", (lambda v: v / np.linalg.norm(v))(rng.normal(size=(1, 128)).astype(np.float32)))
    assert g.threshold_source == "default" and g.threshold == 0.2  # 1 % per probe, one comparison → row 0.01
    g.add_embeddings("more", (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(rng.normal(size=(9, 128)).astype(np.float32)))
    assert g.threshold == 0.3  # 10 comparisons need ≤ 1.0e-3 per pair


def test_gallery_saved_with_one_model_refuses_another(models, tmp_path, crops):
    pifr.register_embedder("byo", models["ires_dyn"], normalization="insightface")
    g = pifr.Gallery("byo", threshold=0.3, device="cpu")
    emb = get_embedder("byo", device="cpu")
    g.add_embeddings("alice", emb.embed_crops(crops[:2]))
    g.save(tmp_path / "g.gallery")
    assert g.embedder_sha256 == sha256_file(models["ires_dyn"])
    again = pifr.Gallery.load(tmp_path / "g.gallery", device="cpu")
    assert again.identities == ["alice"] and again.search_embedding(emb.embed_crops(crops[0])[0])[0].identity == "alice"
    # Same name, another file (the fixed-batch export has other bytes): refused.
    pifr.register_embedder("byo", models["ires_b2"], normalization="insightface")
    with pytest.raises(GalleryError, match="re-enroll"):
        pifr.Gallery.load(tmp_path / "g.gallery", device="cpu")
    onnx_registry.unregister_embedder("byo")
    with pytest.raises(GalleryError, match="made with embedder 'byo'"):
        pifr.Gallery.load(tmp_path / "g.gallery", device="cpu")


def test_config_file_registers_by_name_and_stores_a_threshold(models, tmp_path, monkeypatch, crops):
    model_dir = models["dir"]
    cfg = model_dir / "embedders.json"
    cfg.write_text(json.dumps([
        {"name": "cfg_ires", "path": "ires_dyn.onnx", "normalization": "insightface", "channels": "BGR"},  # relative to the file's folder
        {"name": "cfg_mfn", "path": str(models["mfn_dyn"]), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
         "threshold": 0.27},
    ]))
    monkeypatch.setenv("PIFR_EMBEDDERS", str(cfg))
    monkeypatch.chdir(tmp_path)
    onnx_embedder._reset()
    names = {e.name for e in list_embedders()}
    assert {"cfg_ires", "cfg_mfn", "dlib_resnet"} <= names
    got = get_embedder("cfg_ires", device="cpu").embed_crops(crops)
    assert _cos(got, _torch_iresnet(models["iresnet"], crops, "BGR")).min() >= 0.9999
    assert get_embedder("cfg_mfn", device="cpu").threshold == 0.27
    assert not get_embedder("cfg_ires", device="cpu").calibrated
    written = onnx_registry.set_threshold("cfg_ires", 0.4321, "test")
    assert written == cfg
    entry = [e for e in json.loads(cfg.read_text()) if e["name"] == "cfg_ires"][0]
    assert entry["threshold"] == 0.4321 and entry["path"] == "ires_dyn.onnx"
    onnx_embedder._reset()
    assert get_embedder("cfg_ires", device="cpu").threshold == 0.4321
    # A registration made in code is not written anywhere: the line to add is printed instead.
    pifr.register_embedder("code", models["ires_dyn"], normalization="insightface")
    assert onnx_registry.set_threshold("code", 0.5, "test") is None
    assert "threshold=0.5000" in onnx_registry.registration_line(onnx_registry.registered()["code"], 0.5)


def test_broken_config_names_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "embedders.json"
    cfg.write_text(json.dumps([{"name": "x", "path": "x.onnx", "treshold": 0.3}]))
    monkeypatch.setenv("PIFR_EMBEDDERS", str(cfg))
    onnx_embedder._reset()
    with pytest.raises(EmbedderConfigError, match="embedders.json.*treshold"):
        get_embedder("x")
    cfg.write_text("{not json")
    with pytest.raises(EmbedderConfigError, match="embedders.json"):
        list_embedders()
    # Built-in names never read the file.
    assert get_embedder("mobilefacenet", device="cpu").name == "mobilefacenet"


def test_cli_uses_a_registered_model(models, monkeypatch, capsys, tmp_path):
    from pifr.cli import main

    cfg = tmp_path / "embedders.json"
    cfg.write_text(json.dumps([{"name": "cli_mfn", "path": str(models["mfn_dyn"]),
                                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}]))
    monkeypatch.setenv("PIFR_EMBEDDERS", str(cfg))
    onnx_embedder._reset()
    a, b = str(EXAMPLES / "mitchell_frontal.png"), str(EXAMPLES / "mitchell_turned.png")
    assert main(["verify", a, b, "--embedder", "cli_mfn"]) == 2
    assert "NoThresholdError" in capsys.readouterr().err
    assert main(["verify", a, b, "--embedder", "cli_mfn", "--threshold", "0.2738", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["embedder"] == "cli_mfn"
    assert main(["models"]) == 0
    assert "cli_mfn" in capsys.readouterr().out
    out = tmp_path / "e.npz"
    assert main(["embed", a, b, "-o", str(out), "--embedder", "cli_mfn"]) == 0  # embed_many
    got = np.load(out)["embeddings"]
    ref = np.stack([pifr.embed(x, embedder="mobilefacenet", frontalize="never", device="cpu") for x in (a, b)])
    assert got.shape == (2, 128) and _cos(got, ref).min() >= 0.9999
    assert _cos(pifr.embed(a, embedder="cli_mfn", device="cpu")[None], ref[:1])[0] >= 0.9999


def test_auto_uses_a_registered_rule_and_warns_once_without_one(models, caplog):
    from pifr import policy as P

    pifr.register_embedder("ruled", models["ires_dyn"], normalization="insightface",
                           auto_rule={"yaw_threshold": 40, "fusion_weight": 0.25, "view_yaws": [30], "threshold_shift": 0.01})
    assert P.rule_for("ruled") == P.AutoRule(40.0, 0.25, 0.01, view_yaws=(30.0,))
    ruled = P.resolve_policy("ruled")
    assert ruled.fuses_above == 40.0 and ruled.fusion_weight == 0.25 and ruled.threshold_shift(True) == 0.01
    pifr.register_embedder("unruled", models["ires_dyn"], normalization="insightface")
    P._warn_no_rule.cache_clear()
    with caplog.at_level("WARNING", logger="pifr"):
        assert P.resolve_policy("unruled").rule is None and P.resolve_policy("unruled").rule is None
    assert sum("no measured rule for embedder 'unruled'" in r.getMessage() for r in caplog.records) == 1
