"""Train a render refiner (:mod:`pifr.models.refiner`) on rotate-and-render pairs.

Each pair (:mod:`pifr.train.render_pairs`) is a photo's face rotated away and rendered back — with
the defects a real rotation leaves — and the photo itself, pixel-aligned: the refiner learns to
turn renders into photos (Zhou et al., "Rotate-and-Render", CVPR 2020). The objective:

* pixel L1 — full weight on the face (what the render covers and the holes it leaves inside
  the hull of the jaw and brows), ``outside`` weight beyond it (hair and background are not in
  the render; a small weight gives a plausible, not an invented, surround);
  for the TP-GAN generator also at 64 and 32 px and on its four local patches, as in TP-GAN;
* perceptual and identity terms from a frozen face network (MobileFaceNet by default; no VGG
  weights are obtainable offline): mean L1 of its feature maps and ``1 − cosine`` of its embeddings,
  output against photo;
* hinge GAN with a two-scale conditional PatchGAN (spectral norm) and discriminator feature
  matching (R&R's choice), ``adv`` and ``fm`` weights; ``adv=0`` trains without a discriminator.

Runs are resumable: ``RUN/state.pt`` (tensors only, read with ``weights_only=True``) is written
every few minutes and at the end; a second call with the same ``--run`` continues from it. Batches
are drawn from a generator seeded by ``(seed, step)``, so a resumed run sees what an unbroken one
would. Validation holds out whole people (1 in 20 by a hash of the name) and never sees CFP 351–400
(the packs do not hold them). ``RUN/log.jsonl`` has the losses and validation figures,
``RUN/refiner.safetensors`` the latest weights, ``RUN/best.safetensors`` the best by validation.

    python -m pifr.train.refine --packs packs/rr.npz --run runs/tpgan --arch tpgan --width 0.125 --minutes 60
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.refiner import Refiner, RefinerConfig, save_refiner
from . import losses as L
from .refine_checkpoint import CHECKPOINT_FORMAT, _load_optimizer, _optimizer_tensors, export_refiner, is_checkpoint
from .refine_data import VAL_EVERY, PairCache, RefinePairs
from .refine_losses import TwoScaleDiscriminator, pixel_terms, symmetry_term
from .render_pairs import RenderPairPack

log = logging.getLogger("pifr")

@dataclass(frozen=True)
class RefineConfig:
    """Everything a run depends on; written into the state and the weights' metadata."""

    packs: Tuple[str, ...] = ()
    # The defaults are the shipped refiner's recipe (weights/refiner.safetensors: SPADE, width 0.25,
    # no adversarial term, MobileFaceNet teacher); the TP-GAN recipe for a GPU is
    # research/device_tpgan_refiner.json.
    arch: str = "spade"
    width: float = 0.25
    heatmaps: str = "parts"
    batch: int = 8
    lr_g: float = 2e-4
    lr_d: float = 4e-4
    betas: Tuple[float, float] = (0.0, 0.9)  # R&R's Adam betas
    pixel: float = 1.0
    outside: float = 0.2
    feat: float = 1.0
    id_cos: float = 1.0
    adv: float = 0.0
    fm: float = 0.0
    #: TP-GAN's symmetry term: L1 between the output's Laplacian and its mirror's on the face, for
    #: pairs whose photo is within ``sym_max_yaw`` degrees of frontal (a turned photo is not
    #: symmetric about the crop's centre line; the refiner's frontal renders at inference are)
    sym: float = 0.0
    sym_max_yaw: float = 10.0
    #: TP-GAN's total-variation term on the output
    tv: float = 0.0
    identity_net: str = "mobilefacenet"
    #: the identity network's weights: a registered name (e.g. ``dlib_resnet_fp16``, the copy that
    #: needs no dlib), a file, or empty for its own registered weights
    identity_weights: str = ""
    #: embedders whose cosine to the photo validation reports, each on its own ('+'-joined);
    #: one the refiner never trained against says whether its gains are the face or the teacher's marks
    val_nets: str = "dlib_resnet"
    #: the validation figure that picks ``best.safetensors`` (higher is better)
    best_by: str = "cos_dlib_resnet_out"
    #: refiner weights to start from when the run has no state yet (same arch, width, heatmaps)
    init: str = ""
    flip: bool = True
    #: ``"bf16"``: bfloat16 autocast of the forward passes (on CUDA; on a CPU too, slowly — for tests)
    amp: str = "off"
    #: decode every pair once into tensors on the training device (no JPEG decoding per step)
    cache: bool = False
    #: keep Adam's moments (bf16) in ``checkpoint.safetensors`` too, so that a resumed run's
    #: optimiser continues instead of restarting (about 2× the generator's fp16 size more)
    ckpt_optimizer: bool = False
    seed: int = 0
    val_pairs: int = 96
    val_every: int = 200
    log_every: int = 20
    save_every_s: float = 300.0

    def refiner_config(self) -> RefinerConfig:
        return RefinerConfig(arch=self.arch, width=self.width, heatmaps=self.heatmaps)


class RefineTrainer:
    def __init__(self, cfg: RefineConfig, run: Path, packs: Optional[Sequence[RenderPairPack]] = None,
                 identity: Optional[nn.Module] = None, device: str = "cpu") -> None:
        self.cfg, self.run_dir, self.device = cfg, Path(run), torch.device(device)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.amp not in ("off", "bf16"):
            from ..errors import TrainingError

            raise TrainingError(f"amp must be 'off' or 'bf16', got {cfg.amp!r}")
        packs = list(packs) if packs is not None else [RenderPairPack.load(Path(p)) for p in cfg.packs]
        self.train = RefinePairs(packs, "train")
        self.val = RefinePairs(packs, "val")
        if len(self.train) == 0:
            from ..errors import TrainingError

            raise TrainingError("no training pairs in the packs")
        t0 = time.time()
        self.cache = PairCache(self.train, self.device) if cfg.cache else None
        if self.cache is not None:
            log.info("%d training pairs decoded onto %s in %.1f s", len(self.cache), self.device, time.time() - t0)
        torch.manual_seed(cfg.seed)
        self.G = Refiner(cfg.refiner_config()).to(self.device)
        self.D = TwoScaleDiscriminator().to(self.device) if cfg.adv > 0 else None
        self.opt_g = torch.optim.Adam(self.G.parameters(), cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), cfg.lr_d, betas=cfg.betas) if self.D is not None else None
        if identity is None and (cfg.feat or cfg.id_cos):
            from .validation import identity_network

            identity = identity_network(cfg.identity_net, cfg.identity_weights, device=self.device)
        self.identity = identity
        self.step = 0
        self.best = -math.inf
        self.seconds = 0.0  # training time over all resumed parts
        self._val_nets: Optional[Dict[str, nn.Module]] = None
        self._val_ref: Optional[List[Dict[str, torch.Tensor]]] = None
        if (self.run_dir / "state.pt").is_file():
            self.load(self.run_dir / "state.pt")
        elif cfg.init and is_checkpoint(Path(cfg.init)):
            self.load_checkpoint(Path(cfg.init))
        elif cfg.init:
            self.start_from(Path(cfg.init))

    # ------------------------------------------------------------------ steps
    def _draw(self, n: int, pool: int) -> Tuple[List[int], List[bool]]:
        g = np.random.default_rng([self.cfg.seed, self.step])
        items = g.integers(0, pool, n).tolist()
        flips = (g.random(n) < 0.5).tolist() if self.cfg.flip else [False] * n
        return items, flips

    def _autocast(self):
        """bf16 autocast of the forward passes when ``amp="bf16"`` (losses are taken in float32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16")

    def train_step(self, log: bool = True) -> Dict[str, float]:
        """One step of D then G; returns the losses as floats, or ``{}`` with ``log=False`` (each
        float() of a GPU tensor waits for the GPU, so the loop asks only on logging steps)."""
        cfg = self.cfg
        items, flips = self._draw(cfg.batch, len(self.train))
        if self.cache is not None:
            b = self.cache.batch(items, flips)
        else:
            b = {k: v.to(self.device) for k, v in self.train.batch(items, flips).items()}
        self.G.train()
        with self._autocast():
            out = self.G(b["render"], b["mask"], b["landmarks"])
        out = {k: ({n: t.float() for n, t in v.items()} if isinstance(v, dict) else v.float()) for k, v in out.items()}
        fake = out["img128"]
        logs: Dict[str, float] = {}
        if self.D is not None:
            self.D.train()
            with self._autocast():
                d_fake = self.D(fake.detach(), b["render"], b["mask"])
                d_real = self.D(b["target"], b["render"], b["mask"])
            d_loss = sum(F.relu(1 - r[-1].float()).mean() + F.relu(1 + f[-1].float()).mean() for r, f in zip(d_real, d_fake))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            d_value = d_loss.detach()
        terms: Dict[str, torch.Tensor] = {"pixel": pixel_terms(out, b, cfg.outside)}
        if self.identity is not None and (cfg.feat or cfg.id_cos):
            with self._autocast():
                terms["feat"], terms["id_cos"] = L.identity_terms(self.identity, fake, b["target"])
        if self.D is not None:
            with self._autocast():
                g_fake = self.D(fake, b["render"], b["mask"])
                with torch.no_grad():
                    g_real = self.D(b["target"], b["render"], b["mask"])
            terms["adv"] = -sum(f[-1].float().mean() for f in g_fake)
            terms["fm"] = sum(F.l1_loss(a.float(), r.detach().float()) for f, rr in zip(g_fake, g_real) for a, r in zip(f[:-1], rr[:-1])) / 8
        if cfg.sym:
            terms["sym"] = symmetry_term(fake, b["face"], b["yaw"], cfg.sym_max_yaw)
        if cfg.tv:
            terms["tv"] = L.tv_loss(fake)
        weights = {"pixel": cfg.pixel, "feat": cfg.feat, "id_cos": cfg.id_cos, "adv": cfg.adv, "fm": cfg.fm, "sym": cfg.sym, "tv": cfg.tv}
        total = sum(weights[k] * v for k, v in terms.items())
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        self.step += 1
        if not log:
            return {}
        if self.D is not None:
            logs["d"] = float(d_value)
        logs.update({k: float(v.detach()) for k, v in terms.items()}, total=float(total.detach()))
        return logs

    # ------------------------------------------------------------- validation
    def _validation_nets(self) -> Dict[str, nn.Module]:
        if self._val_nets is None:
            from .validation import identity_network

            self._val_nets = {"idnet": self.identity} if self.identity is not None else {}
            for name in filter(None, self.cfg.val_nets.split("+")):
                self._val_nets[name] = identity_network(name, device=self.device)
        return self._val_nets

    @torch.no_grad()
    def _reference(self, n: int) -> List[Dict[str, torch.Tensor]]:
        """The validation batches with what does not change between validations: each network's
        embedding of the photo, and the renders' own error and cosines (computed once per run)."""
        if self._val_ref is None:
            nets = self._validation_nets()
            self._val_ref = []
            for i in range(0, n, 16):
                b = {k: v.to(self.device) for k, v in self.val.batch(list(range(i, min(n, i + 16)))).items()}
                for net_name, net in nets.items():
                    b[f"emb_{net_name}"] = net(b["target"])["embedding"].float()
                self._val_ref.append(b)
        return self._val_ref

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Face-region L1 (×255 levels) and cosine to the photo of the outputs and of the renders
        themselves, on the first ``val_pairs`` validation pairs; cosines by the training identity
        network (``idnet``) and by each of ``val_nets``."""
        n = min(self.cfg.val_pairs, len(self.val))
        if n == 0:
            return {}
        nets = self._validation_nets()
        self.G.eval()
        acc: Dict[str, List[float]] = {}
        for b in self._reference(n):
            out = self.G(b["render"], b["mask"], b["landmarks"])["img128"]
            for name, img in (("out", out), ("render", b["render"])):
                err = ((img - b["target"]).abs().mean(1, keepdim=True) * b["mask"]).flatten(1).sum(1) / b["mask"].flatten(1).sum(1)
                acc.setdefault(f"l1_face_{name}", []).extend((err * 127.5).tolist())
                for net_name, net in nets.items():
                    c = F.cosine_similarity(net(img)["embedding"].float(), b[f"emb_{net_name}"], dim=1)
                    acc.setdefault(f"cos_{net_name}_{name}", []).extend(c.tolist())
        return {k: round(float(np.mean(v)), 4) for k, v in acc.items()} | {"val_pairs": n}

    @torch.no_grad()
    def sample_grid(self, path: Path, n: int = 8) -> None:
        """Rows of validation pairs: render | refined | photo."""
        from PIL import Image

        n = min(n, len(self.val))
        if n == 0:
            return
        b = self.val.batch(list(range(0, len(self.val), max(1, len(self.val) // n)))[:n])
        self.G.eval()
        out = self.G(b["render"].to(self.device), b["mask"].to(self.device), b["landmarks"].to(self.device))["img128"].cpu()
        rows = [torch.cat([b["render"][i], out[i], b["target"][i]], 2) for i in range(n)]
        grid = ((torch.cat(rows, 1).clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(grid).save(path)

    # ------------------------------------------------------------------ state
    def save(self) -> None:
        s = {"G": self.G.state_dict(), "opt_g": self.opt_g.state_dict(), "step": self.step, "best": self.best,
             "seconds": self.seconds, "config": json.dumps(asdict(self.cfg))}
        if self.D is not None:
            s.update(D=self.D.state_dict(), opt_d=self.opt_d.state_dict())
        tmp = self.run_dir / "state.pt.tmp"
        torch.save(s, tmp)
        tmp.replace(self.run_dir / "state.pt")
        save_refiner(self.G, self.run_dir / "refiner.safetensors", self.meta())
        self.save_checkpoint(self.run_dir / "checkpoint.safetensors")

    def save_checkpoint(self, path: Path) -> None:
        """The run in a file small enough to travel (e.g. to and from a lent GPU machine): the
        generator and discriminator in fp16, Adam's moments in bf16 when ``ckpt_optimizer``, the
        step, training seconds and best score. ``init=`` that file continues the run from there
        (``state.pt``, float32 and every optimiser, stays the exact resume on the same machine)."""
        from safetensors.torch import save_file

        half = lambda sd, pre: {f"{pre}.{k}": (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in sd.items()}  # noqa: E731
        t = half(self.G.state_dict(), "G")
        if self.D is not None:
            t.update(half(self.D.state_dict(), "D"))
        if self.cfg.ckpt_optimizer:
            t.update(_optimizer_tensors(self.opt_g, "opt_g"))
            if self.opt_d is not None:
                t.update(_optimizer_tensors(self.opt_d, "opt_d"))
        md = {"format": CHECKPOINT_FORMAT, "config": json.dumps(asdict(self.cfg)), "step": str(self.step),
              "seconds": str(round(self.seconds, 1)), "best": repr(self.best), "meta": json.dumps(self.meta())}
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        save_file(t, str(tmp), metadata=md)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a :meth:`save_checkpoint` file: weights (fp16 → float32), step, seconds,
        best; the discriminator and optimisers where the file has them (else they start afresh)."""
        from safetensors import safe_open

        from ..errors import TrainingError

        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        saved, mine = json.loads(md["config"]), asdict(self.cfg)
        for k in ("arch", "width", "heatmaps"):
            if saved[k] != mine[k]:
                raise TrainingError(f"{path}: a checkpoint of {k}={saved[k]!r}, not the run's {mine[k]!r}")

        def part(pre: str, module: nn.Module) -> Dict[str, torch.Tensor]:
            own = module.state_dict()
            return {k: t[f"{pre}.{k}"].to(own[k].dtype) for k in own}

        try:
            self.G.load_state_dict(part("G", self.G))
            if self.D is not None and any(k.startswith("D.") for k in t):
                self.D.load_state_dict(part("D", self.D))
        except (KeyError, RuntimeError) as e:
            raise TrainingError(f"{path}: its tensors do not fit the run's networks ({e})") from e
        restored = _load_optimizer(self.opt_g, t, "opt_g")
        if self.opt_d is not None:
            restored = _load_optimizer(self.opt_d, t, "opt_d") and restored
        self.step, self.seconds, self.best = int(md["step"]), float(md["seconds"]), float(md["best"])
        log.info("continuing %s at step %d (optimiser state %s)", path, self.step, "restored" if restored else "fresh")

    def start_from(self, path: Path) -> None:
        """Initialise the refiner from a weights file (e.g. the shipped refiner) for a fine-tune."""
        from ..models.refiner import read_refiner

        net, _ = read_refiner(path)
        if net.config != self.G.config:
            from ..errors import TrainingError

            raise TrainingError(f"{path}: a refiner {net.config}, not the run's {self.G.config}")
        self.G.load_state_dict(net.state_dict())
        log.info("starting from %s", path)

    def load(self, path: Path) -> None:
        s = torch.load(path, map_location=self.device, weights_only=True)
        saved = json.loads(s["config"])
        mine = asdict(self.cfg)
        for k in ("arch", "width", "heatmaps"):
            if saved[k] != mine[k]:
                from ..errors import TrainingError

                raise TrainingError(f"{path}: the run was started with {k}={saved[k]!r}, not {mine[k]!r}")
        self.G.load_state_dict(s["G"])
        self.opt_g.load_state_dict(s["opt_g"])
        if self.D is not None and "D" in s:
            self.D.load_state_dict(s["D"])
            self.opt_d.load_state_dict(s["opt_d"])
        self.step, self.best, self.seconds = int(s["step"]), float(s["best"]), float(s["seconds"])
        log.info("resumed %s at step %d", path, self.step)

    def meta(self) -> Dict[str, object]:
        c = asdict(self.cfg)
        return {"step": self.step, "train_seconds": round(self.seconds), "train_pairs": len(self.train),
                "val_pairs": len(self.val), "config": c,
                "split": "train: rotate-and-render pairs of CFP 001-350 and LFW (CFP 351-400 people never in the packs); "
                         f"val: 1 person in {VAL_EVERY} of those held out by name hash",
                "packs": [p.manifest.get("source", "") + f" ({p.manifest.get('photos')} photos)" for p in self.train.packs]}

    # -------------------------------------------------------------------- run
    def run(self, minutes: float = 0.0, steps: int = 0) -> Dict[str, float]:
        """Train until ``steps`` (total, counting resumed ones) or ``minutes`` of this call pass."""
        from tqdm import tqdm

        t_start = time.time()
        last_save = t_start
        logf = open(self.run_dir / "log.jsonl", "a")
        bar = tqdm(desc=f"refine {self.cfg.arch}", initial=self.step, total=steps or None, unit="step")
        val: Dict[str, float] = {}
        try:
            while (not steps or self.step < steps) and (not minutes or time.time() - t_start < 60 * minutes):
                t0 = time.time()
                logs = self.train_step(log=(self.step + 1) % self.cfg.log_every == 0)
                self.seconds += time.time() - t0
                bar.update(1)
                if logs:
                    logf.write(json.dumps({"step": self.step, "s": round(self.seconds, 1), **{k: round(v, 5) for k, v in logs.items()}}) + "\n")
                    logf.flush()
                    bar.set_postfix(pixel=f"{logs['pixel']:.3f}", id=f"{logs.get('id_cos', 0):.3f}")
                if self.step % self.cfg.val_every == 0:
                    val = self._validate_and_keep(logf)
                if time.time() - last_save > self.cfg.save_every_s:
                    self.save()
                    last_save = time.time()
        finally:
            bar.close()
            if self.step % self.cfg.val_every:
                val = self._validate_and_keep(logf)
            self.save()
            logf.close()
        return val

    def _validate_and_keep(self, logf) -> Dict[str, float]:
        val = self.validate()
        logf.write(json.dumps({"step": self.step, "s": round(self.seconds, 1), "val": val}) + "\n")
        logf.flush()
        score = val.get(self.cfg.best_by, -math.inf)
        if score > self.best:
            self.best = score
            save_refiner(self.G, self.run_dir / "best.safetensors", self.meta() | {"val": val})
        self.sample_grid(self.run_dir / "samples.jpg")
        log.info("step %d val %s", self.step, val)
        return val


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pifr.train.refine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="a JSON object of RefineConfig fields (e.g. research/device_tpgan_refiner.json); "
                                                 "flags given on the command line override it")
    ap.add_argument("--packs", nargs="+", default=None, help="rotate-and-render packs (python -m pifr.train.pack --rotate-and-render)")
    ap.add_argument("--run", default=None, help="run folder: state, log, weights (an existing one is resumed)")
    ap.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "REFINER"), default=None,
                    help="only write a checkpoint.safetensors's generator as refiner weights, then stop")
    ap.add_argument("--minutes", type=float, default=0.0, help="stop after this many minutes (0 = no limit)")
    ap.add_argument("--steps", type=int, default=0, help="stop at this total step count (0 = no limit)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu")
    for f in RefineConfig.__dataclass_fields__.values():
        if f.name in ("packs",):
            continue
        kind = type(f.default)
        if kind is bool:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=lambda s: s.lower() in ("1", "true", "yes"), default=f.default)
        elif kind is tuple:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=float, nargs=2, default=f.default)
        else:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    pre, _ = ap.parse_known_args(argv)
    if pre.config:
        from ..errors import TrainingError

        file_cfg = json.loads(Path(pre.config).read_text())
        unknown = set(file_cfg) - set(RefineConfig.__dataclass_fields__)
        if unknown:
            raise TrainingError(f"{pre.config}: unknown RefineConfig fields {sorted(unknown)}")
        ap.set_defaults(**{k: v for k, v in file_cfg.items()})
    args = ap.parse_args(argv)
    if args.export:
        meta = export_refiner(Path(args.export[0]), Path(args.export[1]))
        print(json.dumps({"refiner": args.export[1], "step": meta.get("step")}))
        return 0
    if not args.run:
        ap.error("--run is required")
    if not args.packs:
        ap.error("no packs: give --packs or a config with \"packs\"")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import signal

    def stop(signum, frame):  # a job scheduler's SIGTERM ends the run as Ctrl-C does: saved, resumable
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if args.threads:
        torch.set_num_threads(args.threads)
    kw = {k: getattr(args, k) for k in RefineConfig.__dataclass_fields__ if k != "packs"}
    kw["betas"] = tuple(kw["betas"])
    cfg = RefineConfig(packs=tuple(args.packs), **kw)
    trainer = RefineTrainer(cfg, Path(args.run), device=args.device)
    log.info("%d train / %d val pairs; refiner %s", len(trainer.train), len(trainer.val), cfg.refiner_config())
    try:
        val = trainer.run(args.minutes, args.steps)
    except KeyboardInterrupt:
        log.info("interrupted at step %d; state saved in %s (run the same command to continue)", trainer.step, args.run)
        return 130
    log.info("stopped at step %d after %.0f s of training; val %s", trainer.step, trainer.seconds, val)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
