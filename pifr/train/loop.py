"""TP-GAN training loop and CLI (``pifr-train`` / ``python -m pifr.train``).

    python -m pifr.train --config cfg.json --set steps=2000 width=0.25 --out runs/tpgan

Separate Adam optimisers for the discriminator, the global generator and the local pathways
(lr 1e-4, β1 0.9 by default); G:D update ratio; seeded and exactly resumable (model, optimiser,
RNG and data-order state are checkpointed as plain state dicts, read back with
``torch.load(weights_only=True)``); losses appended to CSV; input | output | target grids as PNG;
identity similarity on held-out validation pairs; AMP on CUDA; multi-process via ``torchrun``
(DDP; gloo on CPU, NCCL on GPU). Imports neither facenet-pytorch nor dlib.
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .._provenance import source_commit
from ..errors import PifrError, TrainingError
from ..models.tpgan import BEGANDiscriminator, Discriminator, Generator, count_parameters, crop_patches
from . import losses as L
from . import validation as V
from .augment import photometric
from .config import CSV_FIELDS, SELECTION, TrainConfig, as_floats, selection_score
from .data import Pack, PairDataset, identity_range

log = logging.getLogger("pifr.train")


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        known = {f.name for f in fields(L.LossWeights)}
        if set(cfg.weights) - known:
            raise TrainingError(f"unknown loss weights {sorted(set(cfg.weights) - known)}; known: {sorted(known)} "
                                "(terms that left training are listed in research/LOG.md with the commit that has them)")
        if cfg.init and not Path(cfg.init).is_file():  # before minutes of setup, not after
            raise FileNotFoundError(f"{cfg.init}: no such init file (a checkpoint.pt or a generator .safetensors)")
        self.cfg = cfg
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        if cfg.device == "auto":
            dev = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        else:
            dev = cfg.device
        self.device = torch.device(dev)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed + self.rank)
        self.out = Path(cfg.out)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        # Several packs may be given, comma-separated (e.g. real CFP crops + rendered pairs).
        pack = Pack.concat([Pack.load(Path(p)) for p in cfg.pack.split(",") if p])
        self.weights = L.LossWeights(**cfg.weights)
        self.train = PairDataset(pack, identity_range(cfg.train_identities), frontal_inputs=cfg.frontal_inputs)
        if len(self.train) == 0:
            raise TrainingError(f"no training pairs in {cfg.pack} for identities {cfg.train_identities}")
        self.val = None
        if cfg.val_pack:
            vp = pack if cfg.val_pack == cfg.pack else Pack.load(Path(cfg.val_pack))
            self.val = PairDataset(vp, identity_range(cfg.val_identities), frontal_inputs=False, max_targets_per_input=1)
            overlap = set(self.train.identities) & set(self.val.identities)
            if overlap:
                raise TrainingError(f"validation identities overlap training identities: {sorted(overlap)[:5]}")
        try:
            self.g = Generator(cfg.width, id_classes=len(self.train.identities) if cfg.id_classes else 0,
                               skips=cfg.skips).to(self.device)
        except ValueError as e:
            raise TrainingError(str(e)) from e
        self.d: Optional[torch.nn.Module] = None
        if cfg.adversarial == "patch":
            self.d = Discriminator(cfg.width).to(self.device)
        elif cfg.adversarial == "began":
            self.d = BEGANDiscriminator(cfg.width).to(self.device)
            self.balance = L.BEGANBalance()
        self.gd, self.dd = self.g, self.d
        # The averaged generator: a frozen copy, updated after every generator step (_update_ema).
        self.g_ema: Optional[Generator] = (copy.deepcopy(self.g).eval().requires_grad_(False)
                                           if cfg.ema else None)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.gd = DDP(self.g, device_ids=ids, find_unused_parameters=False)
            if self.d is not None:
                self.dd = DDP(self.d, device_ids=ids)
        groups = self.g.parameter_groups()
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(groups["global"], lr=cfg.lr, betas=betas)
        self.opt_l = torch.optim.Adam(groups["local"], lr=cfg.lr, betas=betas) if groups["local"] else None
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=betas) if self.d is not None else None
        self.id_feats = self._identity_net()
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self._last_d = math.nan
        self.best_val, self.best_step = -math.inf, 0
        self._last_began = (math.nan, math.nan)
        self._order: List[int] = []
        self._pos = 0
        self._epoch = 0
        self._val_ref: Optional[V.ValReference] = None

    # ---------------------------------------------------------------- setup helpers
    def _identity_net(self) -> "Optional[L.IdentityFeatures | L.IdentityEnsemble]":
        w = self.weights
        if self.cfg.identity_net == "none" or not (w.ip or w.id_cos):
            return None
        return V.identity_network(self.cfg.identity_net, self.cfg.identity_weights, self.device)

    def _next_batch(self) -> Dict[str, torch.Tensor]:
        b = self.cfg.batch
        idx = []
        while len(idx) < b:
            if self._pos >= len(self._order):
                g = torch.Generator().manual_seed(self.cfg.seed * 1000003 + self._epoch)
                perm = torch.randperm(len(self.train), generator=g).tolist()
                self._order = perm[self.rank::self.world]
                self._pos = 0
                self._epoch += 1
            idx.append(self._order[self._pos])
            self._pos += 1
        return self._collate([self.train[i] for i in idx])

    def _collate(self, items: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        """PairDataset items stacked into one batch on the training device."""
        # torch.as_tensor: yaw and identity are plain numbers.
        return {k: torch.stack([torch.as_tensor(it[k]) for it in items]).to(self.device) for k in items[0]}

    # ---------------------------------------------------------------- one step
    def train_step(self) -> Dict[str, Any]:
        """One generator update (and the discriminators' every ``g_steps_per_d``-th step). Returns
        the step's unweighted loss terms, mostly as detached 0-d tensors: :func:`as_floats` reads
        them (a host sync on GPU, which is why the loop does it only on the steps it logs)."""
        cfg = self.cfg
        batch = self._next_batch()
        x, y, xl, yl = batch["input"], batch["target"], batch["input_lm"], batch["target_lm"]
        if cfg.augment > 0:
            x, y = photometric(x, y, self._step_rng("augment"), cfg.augment)
        view = None
        if cfg.id_view_jitter > 0 and self.id_feats is not None:
            view = L.RandomView.draw(x.shape[0], cfg.id_view_jitter, self._step_rng("view"), self.device)
        logs: Dict[str, float] = {}
        ac = torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp)
        # The discriminator: every g_steps_per_d-th step, on one no-grad pass of the generator.
        if self.d is not None and self.step % cfg.g_steps_per_d == 0:
            with torch.no_grad(), ac:
                fake = self.gd(x, xl)["img128"].float()
            with ac:
                if cfg.adversarial == "patch":
                    d_loss = L.d_adversarial_loss(self.dd(y), self.dd(fake))
                else:
                    er = (self.dd(y) - y).abs().mean()
                    ef = (self.dd(fake) - fake).abs().mean()
                    d_loss = self.balance.d_loss(er, ef)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler.scale(d_loss).backward()
            self.scaler.step(self.opt_d)
            if cfg.adversarial == "began":
                self._last_began = (self.balance.k, self.balance.update(float(er), float(ef)))
            self._last_d = d_loss.detach()
        if self.d is not None:
            logs["d"] = self._last_d  # the most recent discriminator loss (D steps every g_steps_per_d)
        if cfg.adversarial == "began":
            logs["began_k"], logs["began_M"] = self._last_began
        with ac:
            out = self.gd(x, xl)
            fake_logits, began_err = None, None
            if self.d is not None:
                if cfg.adversarial == "patch":
                    fake_logits = self.dd(out["img128"])
                else:
                    began_err = (self.dd(out["img128"]) - out["img128"]).abs().mean()
            lt = L.generator_loss(out, y, weights=self.weights, target_patches=crop_patches(y, yl),
                                  fake_logits=fake_logits, began_fake_err=began_err, id_features=self.id_feats,
                                  id_labels=batch["identity"], sym_space=cfg.sym_space,
                                  pixel_weight=None if cfg.pixel_on_identity_pairs == 1 else
                                  batch["aligned"] + (1 - batch["aligned"]) * cfg.pixel_on_identity_pairs,
                                  id_view=view)
            total = lt.total
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_l:
            self.opt_l.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.opt_g)
        if self.opt_l:
            self.scaler.step(self.opt_l)
        self.scaler.update()
        self._update_ema()
        self.step += 1
        logs.update({f"g_{k}": v for k, v in lt.terms.items()}, g_total=total.detach())
        return logs

    def _step_rng(self, stream: str) -> torch.Generator:
        """A CPU generator for one random stream of this step on this rank. Seeded by (seed, stream,
        step, rank) alone, so a resumed run draws what the uninterrupted one would have; hashed, so
        no two streams, steps or ranks share a seed (sums like seed + step·k + rank collide)."""
        key = f"{self.cfg.seed}/{stream}/{self.step}/{self.rank}".encode()
        return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema ← d·ema + (1−d)·live, with d ramped up from 0.1 over the first steps of a run so
        the average does not remember a fresh initialisation for thousands of steps; BatchNorm's
        running statistics are copied, not averaged."""
        if self.g_ema is None:
            return
        d = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        for pe, p in zip(self.g_ema.parameters(), self.g.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.g_ema.buffers(), self.g.buffers()):
            be.copy_(b)

    @property
    def g_eval(self) -> torch.nn.Module:
        """The generator that is validated, sampled and saved: the average when ``ema`` is on."""
        return self.g_ema if self.g_ema is not None else self.g

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> Dict[str, Any]:
        s: Dict[str, Any] = {
            "step": self.step, "epoch": self._epoch, "pos": self._pos,
            "order": torch.tensor(self._order, dtype=torch.int64),
            "g": self.g.state_dict(), "opt_g": self.opt_g.state_dict(),
            "rng": torch.get_rng_state(), "config": json.dumps(asdict(self.cfg)), "last_d": float(self._last_d),
            "best_val": self.best_val, "best_step": self.best_step, "selection": SELECTION,
        }
        if self.opt_l:
            s["opt_l"] = self.opt_l.state_dict()
        if self.g_ema is not None:
            s["g_ema"] = self.g_ema.state_dict()
        if self.d is not None:
            s["d"], s["opt_d"] = self.d.state_dict(), self.opt_d.state_dict()
        if self.device.type == "cuda":
            s["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.cfg.adversarial == "began":
            s["began_k"] = self.balance.k
        return s

    def save_generator(self, path: Path) -> Path:
        """The generator alone, as safetensors with its config, step and validation score in the metadata."""
        from safetensors.torch import save_file

        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.g_eval.state_dict().items()}, str(tmp),
                  metadata={"config": json.dumps(asdict(self.g.config)), "step": str(self.step),
                            "best_val_score": str(self.best_val), "best_step": str(self.best_step),
                            "ema": str(self.cfg.ema)})
        tmp.replace(path)
        return path

    def save(self, path: Optional[Path] = None) -> Path:
        path = path or self.out / "checkpoint.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)
        return path

    def load_networks(self, path: Path) -> int:
        """Generator, discriminator and optimiser states from a checkpoint; returns its step.

        A generator ``.safetensors`` (:meth:`save_generator`'s file, fp32 or the fp16 export) sets
        the generator (and its average) alone: the discriminators and optimisers start fresh. It is
        ~4x smaller than checkpoint.pt, which is what lets a warm start travel to a GPU machine."""
        if path.suffix == ".safetensors":
            return self._load_generator_file(path)
        s = torch.load(path, map_location=self.device, weights_only=True)
        self._load_networks(s)
        for opt in (self.opt_g, self.opt_l, self.opt_d):  # the optimiser states carry the old run's lr
            for group in (opt.param_groups if opt else []):
                group["lr"] = self.cfg.lr
        return int(s["step"])

    def _load_generator_file(self, path: Path) -> int:
        from ..generator import Frontalizer

        # The inference loader reads and checks the file (typed errors for a corrupt one, defaults
        # for config keys older files lack); only its size has to match this run's.
        src = Frontalizer(path, self.device)
        if src.net.config != self.g.config:
            raise ValueError(f"init={path}: a {src.net.config} generator cannot start a {self.g.config} run "
                             "(set width/skips/... to match it)")
        state = src.net.state_dict()
        self.g.load_state_dict(state)
        if self.g_ema is not None:
            self.g_ema.load_state_dict(state)
        return int(src.metadata.get("step", 0))

    def _load_networks(self, s: Dict[str, Any]) -> None:
        self.g.load_state_dict(s["g"])
        if self.g_ema is not None:  # a checkpoint without an average (ema was off) starts it from its weights
            self.g_ema.load_state_dict(s.get("g_ema", s["g"]))
        self.opt_g.load_state_dict(s["opt_g"])
        if self.opt_l and "opt_l" in s:
            self.opt_l.load_state_dict(s["opt_l"])
        if self.d is not None:
            self.d.load_state_dict(s["d"])
            self.opt_d.load_state_dict(s["opt_d"])

    def load(self, path: Path) -> None:
        """Everything, for an exact resume: networks, optimisers, step, data order, random state."""
        s = torch.load(path, map_location=self.device, weights_only=True)
        self._load_networks(s)
        torch.set_rng_state(s["rng"].cpu())
        if "cuda_rng" in s and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["cuda_rng"].cpu(), self.device)
        if "began_k" in s:
            self.balance.k = float(s["began_k"])
        self.step, self._epoch, self._pos = int(s["step"]), int(s["epoch"]), int(s["pos"])
        self._last_d = float(s.get("last_d", math.nan))
        if s.get("selection") == SELECTION:  # a score kept under another rule is not comparable
            self.best_val, self.best_step = float(s["best_val"]), int(s.get("best_step", 0))
        self._order = s["order"].tolist()

    # ---------------------------------------------------------------- validation and samples
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """:func:`pifr.train.validation.figures` on the first ``val_pairs`` validation pairs: rank-1
        and identity cosine of outputs and raw inputs, L1 of outputs. Outputs are :attr:`g_eval`'s;
        with ``ema`` on, ``val_*_live`` are the live weights'."""
        if self.val is None or self.id_feats is None:
            return {}
        embed = V.embedding_fn(self.id_feats)
        if self._val_ref is None:  # the pairs are fixed and the identity network frozen: embed them once
            self._val_ref = V.reference(self.val, self.cfg.val_pairs, self.cfg.batch, embed, self.device)
        nets: Dict[str, V.GenerateFn] = {"output": lambda x, xl: self._generate(x, xl, self.g_eval)}
        if self.g_ema is not None:
            nets["live"] = lambda x, xl: self._generate(x, xl, self.g)
        self.g.eval()
        try:
            return V.figures(nets, self._val_ref, embed, self.device)
        finally:
            self.g.train()

    def _generate(self, x: torch.Tensor, xl: torch.Tensor, net: Optional[torch.nn.Module] = None) -> torch.Tensor:
        """Output at 128 px with zero noise, as :class:`pifr.generator.Frontalizer` runs it,
        so validation figures and samples match what users get. ``net``: :attr:`g_eval` by default."""
        net = net if net is not None else self.g_eval
        noise = torch.zeros(len(x), self.g.noise_dim, device=x.device, dtype=x.dtype)
        return net(x, xl, noise)["img128"]

    @torch.no_grad()
    def sample_grid(self, path: Path, n: int = 6) -> None:
        from PIL import Image

        ds = self.val if self.val is not None else self.train
        self.g.eval()
        try:
            img = V.comparison_grid(ds, range(min(n, len(ds))), [self._generate], self.device)
        finally:
            self.g.train()
        Image.fromarray(img).save(path)

    # ---------------------------------------------------------------- loop
    def _out_of_time(self, t0: float) -> bool:
        """Whether the wall-clock budget is spent; under DDP every process stops at the same step
        (one that stopped alone would leave the others waiting in a collective)."""
        over = time.time() - t0 > self.cfg.max_minutes * 60
        if self.world > 1:
            flag = torch.tensor([float(over)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            over = bool(flag.item())
        return over

    def run(self) -> Dict[str, float]:
        cfg = self.cfg
        ck = self.out / "checkpoint.pt"
        init_step = None
        if cfg.resume and ck.is_file():
            self.load(ck)
            log.info("resumed from %s at step %d", ck, self.step)
        elif cfg.init:
            init_step = self.load_networks(Path(cfg.init))
            log.info("initialised from %s (its step %d)", cfg.init, init_step)
        if self.rank == 0:
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
            (self.out / "run.json").write_text(json.dumps({
                "generator_parameters": count_parameters(self.g), "width": cfg.width,
                "train_pairs": len(self.train), "train_identities": len(self.train.identities),
                "val_pairs": len(self.val) if self.val else 0,
                "pack_manifest": self.train.pack.manifest, "device": str(self.device), "world_size": self.world,
                "splits": "train: CFP 001-350 (+LFW / renders when packed); validation: CFP 351-400",
                "init": {"from": cfg.init, "step": init_step} if cfg.init else None,
                "commit": source_commit(), "command": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "resumed_at_step": self.step if cfg.resume and ck.is_file() else None,
            }, indent=2, default=str))
        csv_path = self.out / "losses.csv"
        writer, fh = None, None
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", disable=self.rank != 0)
        t0 = time.time()
        last: Dict[str, float] = {}
        self.g.train()
        while self.step < cfg.steps:
            if cfg.max_minutes and self._out_of_time(t0):
                log.info("wall-clock budget of %.1f min reached at step %d; saving", cfg.max_minutes, self.step)
                break
            logs = self.train_step()
            bar.update(1)
            if self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                logs = as_floats(logs)
                if cfg.val_every and self.step % cfg.val_every == 0:
                    logs.update(self.validate())
                    score = selection_score(logs)
                    if score > self.best_val:  # False for NaN
                        # Model selection on the validation identities (CFP 351-400: the tuning split).
                        self.best_val, self.best_step = score, self.step
                        self.save_generator(self.out / "generator_best.safetensors")
                row = {"step": self.step, "seconds": round(time.time() - t0, 2), **{k: round(v, 6) for k, v in logs.items()}}
                if writer is None:
                    new = not csv_path.is_file()
                    # A resumed run keeps the columns its file was started with.
                    if new:
                        fields = CSV_FIELDS
                    else:
                        with csv_path.open() as f:
                            fields = f.readline().strip().split(",")
                    fh = open(csv_path, "a", newline="")
                    writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                    if new:
                        writer.writeheader()
                writer.writerow(row)
                fh.flush()
                bar.set_postfix(pixel=f"{logs.get('g_pixel', math.nan):.3f}")
                last = row
            if self.rank == 0 and cfg.sample_every and self.step % cfg.sample_every == 0:
                self.sample_grid(self.out / f"samples_{self.step:06d}.png")
            if self.rank == 0 and cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                self.save()
                self.save_generator(self.out / "generator.safetensors")
        if self.rank == 0:
            self.save()
            self.save_generator(self.out / "generator.safetensors")
        if fh:
            fh.close()
        bar.close()
        return last


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="pifr-train", description="Train the TP-GAN frontalizer.")
    ap.add_argument("--config", help="JSON file with TrainConfig fields")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. steps=500 width=0.5 weights.ip=0")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trainer = Trainer(TrainConfig.from_args(args.config, args.set))
    except (PifrError, FileNotFoundError) as e:  # a bad option, split, pack or init file: one line, not a traceback
        print(f"pifr-train: error: {e}", file=sys.stderr)
        return 2
    last = trainer.run()
    print(json.dumps(last))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
