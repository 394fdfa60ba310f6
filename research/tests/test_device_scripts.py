"""research/device_train.sh and device_sweep.sh as a GPU machine runs them (no facenet-pytorch,
dlib or installed pifr), and the configs they use."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from research.tests.conftest import ROOT

from pifr.train.config import TrainConfig


def _device_env(tmp_path, out: Path) -> dict:
    """Environment of a GPU machine as it is lent for training: neither facenet-pytorch nor dlib nor
    face-recognition-models importable (dlib's ResNet comes from the shipped fp16 safetensors)."""
    import os
    import sys

    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    # Nor is pifr installed there: it imports only where the tree itself is on sys.path (PYTHONPATH,
    # or the working directory of `python -m`), whatever way it is installed here.
    repo = str(ROOT)
    (block / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"REPO = {repo!r}\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('facenet_pytorch', 'dlib', 'face_recognition_models'):\n"
        "            raise ImportError('not on the device: ' + name)\n"
        "        if name == 'pifr' and not any(os.path.abspath(p or '.') == REPO for p in sys.path):\n"
        "            raise ImportError('pifr is not installed on the device')\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = dict(os.environ, OUT=str(out), RUN_DIR=str(tmp_path / "run"), SWEEP_DIR=str(tmp_path / "sweep"),
               PYTHONPATH=str(block), PIFR_COMMIT="test", PYTHON=sys.executable)
    import subprocess

    blocked = subprocess.run([sys.executable, "-c", "import dlib"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "not on the device" in blocked.stderr
    uninstalled = subprocess.run([sys.executable, "-c", "import pifr"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert uninstalled.returncode != 0 and "not installed on the device" in uninstalled.stderr
    return env


def _bytes_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _device_cfg(small_pack, path: Path, **kw) -> Path:
    cfg = dict(pack=str(small_pack), val_pack=str(small_pack), train_identities="1-3", val_identities="351-351",
               width=0.125, batch=2, steps=3, identity_net="dlib_resnet", identity_weights="dlib_resnet_fp16",
               sample_every=1, ckpt_every=1, val_every=1, log_every=1, val_pairs=2)
    cfg.update(kw)
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("sample_every", [1, 0])
def test_device_job_trains_and_exports_without_facenet_or_dlib(small_pack, tmp_path, sample_every):
    """research/device_train.sh as a GPU machine runs it (neither facenet-pytorch nor dlib nor
    face-recognition-models importable; dlib's ResNet from the shipped fp16 safetensors): it trains
    within its budget and leaves the logs and the fp16 generator, in parts that join back into a
    loadable file, in $OUT — also when the job ends before its first sample grid."""
    import subprocess

    from safetensors import safe_open

    cfg = _device_cfg(small_pack, tmp_path / "cfg.json", sample_every=sample_every)
    out = tmp_path / "out"
    out.mkdir()
    repo = ROOT
    env = _device_env(tmp_path, out)
    r = subprocess.run(["bash", "research/device_train.sh", str(cfg), "5"], env=env, cwd=repo, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    names = {p.name for p in out.iterdir()}
    assert {"device.txt", "train.log", "losses.csv", "run.json"} <= names
    assert ("samples_000003.png" in names) == bool(sample_every)
    assert "commit test" in (out / "device.txt").read_text()
    parts = sorted(out.glob("generator_fp16.safetensors.part*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    joined = tmp_path / "g.safetensors"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with safe_open(str(joined), "pt") as f, safe_open(str(tmp_path / "run" / "generator_best.safetensors"), "pt") as g:
        assert set(f.keys()) == set(g.keys()) and f.metadata()["dtype"] == "float16"
        k = next(k for k in g.keys() if g.get_tensor(k).is_floating_point())
        assert torch.allclose(f.get_tensor(k).float(), g.get_tensor(k), atol=1e-2)


def test_device_sweep_runs_side_by_side_and_brings_back_the_best(small_pack, tmp_path):
    """research/device_sweep.sh: two runs (the second with a config override) train at once; each
    comes back as one archive of its logs (with LAST=1 its last generator in fp16 too), and only
    the best run's generator parts come back, named by run, joining into the run's generator."""
    import subprocess
    import tarfile

    from safetensors import safe_open

    cfg = _device_cfg(small_pack, tmp_path / "cfg.json")
    out = tmp_path / "out"
    out.mkdir()
    env = dict(_device_env(tmp_path, out), KEEP="1", LAST="1")
    repo = ROOT
    two = f"{small_pack},{small_pack}"  # an override whose value holds a comma
    r = subprocess.run(["bash", "research/device_sweep.sh", "5", f"a={cfg}", f"b={cfg},seed=1,pack={two},width=0.0625"],
                       env=env, cwd=repo, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    names = {p.name for p in out.iterdir()}
    assert {"device.txt", "a.tgz", "b.tgz"} <= names and len(names) <= 8, names
    for run, seed, width, pack in (("a", 0, 0.125, str(small_pack)), ("b", 1, 0.0625, two)):
        with tarfile.open(out / f"{run}.tgz") as t:
            members = {Path(m).name for m in t.getnames()}
            assert {"train.log", "losses.csv", "run.json", "config.json", "job.log",
                    "generator_last_fp16.safetensors"} <= members, members
            conf = json.load(t.extractfile("./config.json"))
            record = json.load(t.extractfile("./run.json"))
            last = _bytes_file(tmp_path / f"{run}_last.safetensors", t.extractfile("./generator_last_fp16.safetensors").read())
        with safe_open(str(last), "pt") as f:
            assert f.metadata()["dtype"] == "float16" and json.loads(f.metadata()["config"])["width"] == width
        assert (conf["seed"], conf["width"], conf["pack"]) == (seed, width, pack)
        assert record["commit"] == "test" and record["command"][0].endswith("__main__.py")
    kept = {n.split(".")[0] for n in names if ".generator_fp16.safetensors.part" in n}
    assert len(kept) == 1, names
    run = kept.pop()
    joined = b"".join(p.read_bytes() for p in sorted(out.glob(f"{run}.generator_fp16.safetensors.part*")))
    ref = tmp_path / "sweep" / run / "run" / "generator_fp16.safetensors"
    assert joined == ref.read_bytes()
    assert "commit test" in (out / "device.txt").read_text()


def test_device_sweep_fails_when_a_run_fails_and_still_brings_back_the_others(small_pack, tmp_path):
    """A run that cannot start (an unknown config key) makes the sweep's exit status non-zero;
    the run that trained still comes back, logs and generator. BRING names the runs whose
    generators come back (here with KEEP=0, so the score's choice would bring none)."""
    import subprocess

    cfg = _device_cfg(small_pack, tmp_path / "cfg.json", sample_every=0)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(_device_env(tmp_path, out), KEEP="0", BRING="bad good")
    repo = ROOT
    r = subprocess.run(["bash", "research/device_sweep.sh", "5", f"good={cfg}", f"bad={cfg},no_such_key=1"], env=env,
                       cwd=repo, capture_output=True, text=True, timeout=900)
    assert r.returncode != 0
    names = {p.name for p in out.iterdir()}
    assert {"good.tgz", "bad.tgz", "good.generator_fp16.safetensors.part00"} <= names, names
    assert not any(n.startswith("bad.generator") for n in names)


def test_device_recipe_is_a_valid_config_whose_identity_network_travels():
    """research/device_renders.json parses as a TrainConfig, and its identity network's weights are
    shipped in weights/ (the GPU machine has no face-recognition-models and gets only the tree)."""
    from pifr.weights import get_spec, resolve

    repo = ROOT
    cfg = TrainConfig.from_args(str(repo / "research" / "device_renders.json"), [])
    spec = get_spec(cfg.identity_weights)
    assert spec.location == "shipped" and (repo / "weights" / spec.file).is_file() and resolve(spec)
    assert cfg.pack.startswith("carry/") and cfg.val_identities == "351-400" and cfg.train_identities == ""


# --------------------------------------------------------------------------- TP-GAN refiner (issue 44)
TPGAN_CONFIG = ROOT / "research" / "device_tpgan_refiner.json"


@pytest.fixture(scope="module")
def rr_pack(tmp_path_factory) -> Path:
    """Rotate-and-render pairs of the three example photos (6 pairs)."""
    from pifr.train.render_pairs import build

    ex = ROOT / "examples" / "images"
    p = tmp_path_factory.mktemp("rr") / "rr.npz"
    build([(ex / n, n) for n in ("mitchell_frontal.png", "night_turned.png", "night_frontal.png")], rotations=2, seed=3).save(p)
    return p


def test_tpgan_refiner_config_is_a_refine_config_and_its_pack_travels():
    """Every key is a RefineConfig field; the recipe is TP-GAN's (adversarial, symmetry, identity,
    TV terms; bf16; pairs on the GPU); its pack is in the tree and within the 20 MiB aimed at."""
    from pifr.train.refine import RefineConfig
    from pifr.train.render_pairs import RenderPairPack

    conf = json.loads(TPGAN_CONFIG.read_text())
    conf["packs"], conf["betas"] = tuple(conf["packs"]), tuple(conf["betas"])
    cfg = RefineConfig(**conf)
    assert cfg.arch == "tpgan" and cfg.adv > 0 and cfg.sym > 0 and cfg.tv > 0 and (cfg.id_cos > 0 or cfg.feat > 0)
    assert cfg.amp == "bf16" and cfg.cache and cfg.identity_weights == "dlib_resnet_fp16" and cfg.val_nets == ""
    for p in cfg.packs:
        assert (ROOT / p).stat().st_size <= 20 * 2**20
        assert len(RenderPairPack.load(ROOT / p)) > 1000


def test_tpgan_refiner_checkpoint_fits_the_tree_that_travels():
    """The tracked tree (pack included) plus the config's checkpoint coming back in (G + D fp16)
    stays within the 64 MiB a lease takes. Fails when the tree has grown past it: then carry
    a narrower run or a smaller pack. (Width 0.25, 27.8 MiB, stopped fitting when SFace's
    19 MB of weights shipped; the config runs 0.125, 10.4 MiB.)"""
    import json
    import subprocess

    from pifr.models.refiner import Refiner, RefinerConfig
    from pifr.train.refine_losses import TwoScaleDiscriminator

    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())
    cfg = json.loads((ROOT / "research" / "device_tpgan_refiner.json").read_text())
    n = sum(p.numel() for p in Refiner(RefinerConfig(arch=cfg["arch"], width=cfg["width"])).parameters())
    n += sum(p.numel() for p in TwoScaleDiscriminator().parameters())
    assert tree + 2 * n < 64 * 2**20, f"tree {tree / 2**20:.1f} MiB + checkpoint {2 * n / 2**20:.1f} MiB"


def test_tpgan_refiner_device_job_trains_continues_and_returns_at_most_8_files(rr_pack, tmp_path):
    """research/device_tpgan_refiner.sh as a GPU machine runs it (no dlib, no facenet-pytorch, no
    installed pifr), here on the CPU: a fresh lease leaves ≤ 8 files of ≤ 16 MiB in $OUT, among
    them the checkpoint in parts; those parts, carried into a second lease, continue the run from
    its step; the last step's refiner exports and loads."""
    import subprocess

    from pifr.models.refiner import read_refiner

    conf = json.loads(TPGAN_CONFIG.read_text())
    conf.update(packs=[str(rr_pack)], width=0.0625, batch=2, val_pairs=2, val_every=2, log_every=1)
    (tmp_path / "c.json").write_text(json.dumps(conf))
    init = tmp_path / "init"
    init.mkdir()

    def lease(n, steps):
        out = tmp_path / f"out{n}"
        out.mkdir()
        env = dict(_device_env(tmp_path, out), DEVICE="cpu", MINUTES="1", CONFIG=str(tmp_path / "c.json"),
                   RUN_DIR=str(tmp_path / f"run{n}"), INIT_DIR=str(init), OMP_NUM_THREADS="1")
        r = subprocess.run(["bash", "research/device_tpgan_refiner.sh", "--steps", str(steps)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        files = sorted(out.iterdir())
        assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files), files
        return out, {f.name for f in files}

    out1, names1 = lease(1, 3)
    # (no samples.jpg: the example people are all training people, so there is no validation pair to show)
    assert {"device.txt", "train.log", "log.jsonl", "checkpoint.safetensors.part00"} <= names1
    assert "fresh run" in (out1 / "device.txt").read_text()
    for f in out1.glob("checkpoint.safetensors.part*"):
        (init / f.name).write_bytes(f.read_bytes())
    out2, _ = lease(2, 5)
    assert "continuing" in (out2 / "train.log").read_text() and "at step 3" in (out2 / "train.log").read_text()
    steps = [json.loads(line)["step"] for line in (out2 / "log.jsonl").read_text().splitlines() if "pixel" in line]
    assert steps == [4, 5]
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(b"".join(f.read_bytes() for f in sorted(out2.glob("checkpoint.safetensors.part*"))))
    from pifr.train.refine import main

    assert main(["--export", str(ck), str(tmp_path / "r.safetensors")]) == 0
    net, meta = read_refiner(tmp_path / "r.safetensors")
    assert meta["step"] == 5 and net.config.arch == "tpgan"
