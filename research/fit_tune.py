"""Research: fine-tune the 3D fit's regressor (3DDFA_V2, :mod:`pifr.models.tddfa`) on hand-marked
landmarks — does a finer fit at 60°+ make better renders for recognition? (LOG: "A finer 3D fit".)

The shipped 3DDFA_V2 learnt from 300W-LP — near-frontal photos turned synthetically — and on real
profiles its nose and eyes land a few pixels off; a render of such a fit samples background down
the nose (the dark wedge of ``docs/rotation.md``). CFP marks 30 points by hand on every frontal
and profile, 8 of them points of the 68-point layout (:data:`pifr.eval.datasets.CFP_TO_68`). The
fine-tune moves the fitted 68 landmarks onto those marks (pseudo-Huber loss, crop pixels) while
every landmark — x, y and depth — is held near the original network's on the same crop
(``anchor``): the points CFP does not mark, and the depth the renderer orders by, keep the
original's shape. Crops are jittered (the detector's box moves) and mirrored (the mark indices
mirrored with them); BatchNorm statistics stay the original's.

Splits: trains on CFP 001–350 only; the tuning split (CFP 351–400) scores every validation and
picks the best step. Runs resume: ``RUN/state.pt`` (tensors only, read with
``weights_only=True``) is written at every validation; batches are drawn from a generator seeded
by ``(seed, step)``, so a resumed run sees what an unbroken one would. ``RUN/log.jsonl`` has the
losses and validation figures, ``RUN/best.safetensors`` the weights (the ``tddfa_mb05`` layout).

    python -m research.fit_tune --cfp ../shared/data/cfp --run runs/fit --steps 2000 [--shape-anchor 1]
    python -m research.with_fit runs/fit/best.safetensors research/partial_turn.py --turn-to 45 50
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

from pifr.train.refine_data import FLIP_68

log = logging.getLogger("pifr")

#: 3DDFA_V2's input side (px).
CROP = 120
#: Validation bins of the original network's |yaw| (degrees).
YAW_BINS = ((0, 30), (30, 60), (60, 75), (75, 91))


@dataclass(frozen=True)
class FitConfig:
    """Everything a run depends on; written into the run record."""

    steps: int = 3000
    batch: int = 32
    lr: float = 1e-4
    anchor: float = 0.1  # weight of the hold on all 68 landmarks (x, y, depth) to the original's
    shape_anchor: float = 0.0  # weight of the hold on the 50 shape + expression coefficients (in their std units)
    # The marks trained on (68-point indices; CFP marks these and 8, the chin, which sits lower
    # than the 68-point chin even on frontal faces — a convention, not an error — so it is left out).
    marks: Tuple[int, ...] = (27, 30, 36, 39, 42, 45, 48, 51, 54, 57)
    jitter: float = 0.05  # ROI shift (fraction of its side) and log-scale jitter
    profile_share: float = 0.7  # share of each batch drawn from profiles, where the fit errs
    train_ids: Tuple[int, int] = (1, 350)
    tune_ids: Tuple[int, int] = (351, 400)
    frontals: int = 4  # frontal photos per identity (profiles: all four)
    val_every: int = 250
    seed: int = 0
    threads: int = 2


@dataclass
class FiducialSet:
    """CFP photos with their 3DDFA ROI and marked landmarks.

    Attributes:
        images: BGR uint8 photos (as 3DDFA reads them).
        roi: ``(N, 4)`` x1, y1, x2, y2 px — 3DDFA_V2's square crop of the detector's box.
        target: ``(N, 68, 2)`` marked points at their 68-point indices, NaN where none.
        identity: ``(N,)`` CFP identity. profile: ``(N,)`` bool.
    """

    images: List[np.ndarray]
    roi: np.ndarray
    target: np.ndarray
    identity: np.ndarray
    profile: np.ndarray
    paths: np.ndarray

    def save(self, path: Path) -> None:
        """The index only (paths, ROIs, marks): the photos are re-read from the CFP folder."""
        np.savez(path, paths=self.paths.astype(str), roi=self.roi, target=self.target, identity=self.identity,
                 profile=self.profile)

    @classmethod
    def load(cls, path: Path) -> "FiducialSet":
        import cv2

        d = np.load(path, allow_pickle=False)
        imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in d["paths"]]
        if any(im is None for im in imgs):
            raise FileNotFoundError(f"{path}: some photos it indexes cannot be read any more")
        return cls(imgs, d["roi"], d["target"], d["identity"], d["profile"].astype(bool), d["paths"])

    @classmethod
    def build(cls, cfp_dir: Path, identities: range, frontals: int = 4, detector: Optional[str] = None) -> "FiducialSet":
        """Detect each photo's face (the library's detector, as at inference) and read its marks;
        a photo without a face is skipped and counted in the log."""
        from tqdm import tqdm

        from pifr.detection import locate_face
        from pifr.errors import PifrError
        from pifr.eval.datasets import cfp_fiducials, cfp_images, cfp_landmarks68
        from pifr.models.tddfa import roi_from_bbox

        ims = [im for im in cfp_images(cfp_dir, identities) if im.pose == "profile" or im.index <= frontals]
        imgs, rows, skipped = [], [], 0
        for im in tqdm(ims, desc="detect"):
            try:
                img, face = locate_face(im.path, detector=detector)
            except PifrError:
                skipped += 1
                continue
            imgs.append(np.ascontiguousarray(img[..., ::-1]))
            rows.append((str(im.path), roi_from_bbox(face.bbox), cfp_landmarks68(cfp_fiducials(im.path)), im.identity,
                         im.pose == "profile"))
        log.info("fiducial set: %d photos, %d without a face skipped", len(rows), skipped)
        return cls(imgs, np.array([r[1] for r in rows], np.float64), np.stack([r[2] for r in rows]),
                   np.array([r[3] for r in rows]), np.array([r[4] for r in rows]), np.array([r[0] for r in rows]))


def crops(images: Sequence[np.ndarray], rois: np.ndarray, targets: np.ndarray, rng: Optional[np.random.Generator] = None,
          jitter: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """``(B, 120, 120, 3)`` BGR crops over each ROI and the marks in crop pixels ``(B, 68, 2)``.
    With ``rng``: the ROI jittered by ``jitter`` and half the crops mirrored (marks re-indexed)."""
    from pifr.pose import roi_crop

    xs, ts = [], []
    for img, roi, t in zip(images, rois, targets):
        x1, y1, x2, y2 = (float(v) for v in roi)
        t = np.array(t, np.float64)
        if rng is not None and rng.random() < 0.5:
            w = img.shape[1]
            img = img[:, ::-1]
            x1, x2 = w - 1 - x2, w - 1 - x1
            t[:, 0] = w - 1 - t[:, 0]
            t = t[FLIP_68]
        if rng is not None and jitter:
            side = x2 - x1
            k = math.exp(rng.uniform(-jitter, jitter))
            cx = (x1 + x2) / 2 + rng.uniform(-jitter, jitter) * side
            cy = (y1 + y2) / 2 + rng.uniform(-jitter, jitter) * side
            x1, y1, x2, y2 = cx - k * side / 2, cy - k * side / 2, cx + k * side / 2, cy + k * side / 2
        xs.append(roi_crop(np.ascontiguousarray(img), (x1, y1, x2, y2), CROP))  # as the library crops for 3DDFA
        ts.append((t - [x1, y1]) * (CROP / (x2 - x1)))
    return np.stack(xs), np.stack(ts)


class CropLandmarks(torch.nn.Module):
    """3DDFA_V2's 62 parameters → the 68 landmarks ``(B, 68, 3)``: x, y in crop pixels (y down)
    and depth (camera units), differentiably; the same projection as
    :func:`pifr.face3d.fit_params` (which then maps the crop into the photo)."""

    def __init__(self) -> None:
        super().__init__()
        from pifr.face3d import face_model

        m = face_model()
        self.register_buffer("mean", torch.tensor(m.landmarks_mean.reshape(-1), dtype=torch.float32))
        self.register_buffer("basis", torch.tensor(np.hstack([m.w_shp, m.w_exp]), dtype=torch.float32))

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        cam = params[:, :12].reshape(-1, 3, 4)
        pts = (self.mean + params[:, 12:62] @ self.basis.T).reshape(-1, 68, 3)
        q = pts @ cam[:, :, :3].transpose(1, 2) + cam[:, None, :, 3]
        # 3DDFA_V2 reads x − 1 and 120 − y in its crop (see pifr.face3d._camera_in_image).
        return torch.stack([q[..., 0] - 1.0, CROP - q[..., 1], q[..., 2]], -1)


def pseudo_huber(d: torch.Tensor) -> torch.Tensor:
    """Mean of sqrt(|d|² + 1) − 1 over the last axis' vectors (px): L2 near 0, L1 far out."""
    return (torch.sqrt((d ** 2).sum(-1) + 1.0) - 1.0).mean()


def _network(weights: Optional[Path] = None) -> torch.nn.Module:
    from pifr.models.tddfa import TDDFAMobileNet
    from pifr.weights import load_into

    net = TDDFAMobileNet()
    load_into(net, "tddfa_mb05")
    if weights is not None:  # a run's own weights: not the registry's file, so no registry checksum
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(weights)))
    return net.eval()


class FitTrainer:
    def __init__(self, cfg: FitConfig, run: Path, data: FiducialSet, init: Optional[Path] = None) -> None:
        self.cfg, self.run, self.data = cfg, Path(run), data
        self.run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.teacher = _network()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.net = _network(init)
        self.lmk = CropLandmarks()
        self.marks = torch.zeros(68, dtype=torch.bool)
        self.marks[list(cfg.marks)] = True
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        lo, hi = cfg.train_ids
        self.train_idx = np.flatnonzero((data.identity >= lo) & (data.identity <= hi))
        lo, hi = cfg.tune_ids
        self.tune_idx = np.flatnonzero((data.identity >= lo) & (data.identity <= hi))
        if not len(self.train_idx):
            raise ValueError(f"no photos of identities {cfg.train_ids} in the fiducial set")
        prof = data.profile[self.train_idx]
        share = cfg.profile_share if prof.any() and (~prof).any() else float(prof.mean())
        self.p = np.where(prof, share / max(prof.sum(), 1), (1 - share) / max((~prof).sum(), 1))
        self.step, self.best, self.best_step = 0, math.inf, 0
        self._tune_yaw: Optional[np.ndarray] = None

    def _lr(self) -> float:
        # Cosine decay: validation figures of a constant rate wander by ±0.2 % between checks.
        return self.cfg.lr * 0.5 * (1 + math.cos(math.pi * min(self.step / max(self.cfg.steps, 1), 1.0)))

    def train_step(self) -> Dict[str, float]:
        cfg = self.cfg
        rng = np.random.default_rng((cfg.seed, self.step))
        sel = rng.choice(self.train_idx, cfg.batch, p=self.p)
        x, t = crops([self.data.images[i] for i in sel], self.data.roi[sel], self.data.target[sel], rng, cfg.jitter)
        xb = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        tb = torch.from_numpy(t).float()
        self.net.train()
        for m in self.net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        with torch.no_grad():
            ref_params = self.teacher(xb)
            ref = self.lmk(ref_params)
        params = self.net(xb)
        pred = self.lmk(params)
        ok = torch.isfinite(tb).all(-1) & self.marks
        fid = pseudo_huber(pred[..., :2][ok] - tb[ok])
        anchor = pseudo_huber(pred - ref)
        loss = fid + cfg.anchor * anchor
        if cfg.shape_anchor:
            std = self.net.param_std[12:]
            loss = loss + cfg.shape_anchor * (((params[:, 12:] - ref_params[:, 12:]) / std) ** 2).mean()
        for g in self.opt.param_groups:
            g["lr"] = self._lr()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return {"fid_px": float(fid.detach()), "anchor_px": float(anchor.detach())}

    def _params(self, net: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for a in range(0, len(idx), 64):
                i = idx[a:a + 64]
                x, _ = crops([self.data.images[k] for k in i], self.data.roi[i], self.data.target[i])
                out.append(net(torch.from_numpy(x).permute(0, 3, 1, 2).float()))
        return torch.cat(out)

    def errors(self, net: torch.nn.Module, idx: np.ndarray) -> np.ndarray:
        """Per photo, the mean distance of the trained marks (:attr:`FitConfig.marks`), % of the ROI side."""
        pred = self.lmk(self._params(net, idx))[..., :2].numpy()
        _, t = crops([self.data.images[k] for k in idx], self.data.roi[idx], self.data.target[idx])
        d = np.linalg.norm(pred - t, axis=2)[:, list(self.cfg.marks)]
        return np.nanmean(d, 1) / CROP * 100

    def validate(self) -> Dict[str, float]:
        """Mean error on the tuning split by the original network's |yaw| bin, and overall."""
        from pifr.models.tddfa import pose_from_params

        if self._tune_yaw is None:
            self._tune_yaw = np.abs([pose_from_params(p)[0] for p in self._params(self.teacher, self.tune_idx).numpy()])
            self._tune_before = self.errors(self.teacher, self.tune_idx)
        err = self.errors(self.net, self.tune_idx)
        out = {"tune_err": float(err.mean()), "tune_err_before": float(self._tune_before.mean())}
        for lo, hi in YAW_BINS:
            m = (self._tune_yaw >= lo) & (self._tune_yaw < hi)
            if m.any():
                out[f"tune_err_{lo}_{hi}"] = float(err[m].mean())
                out[f"tune_err_{lo}_{hi}_before"] = float(self._tune_before[m].mean())
                out[f"n_{lo}_{hi}"] = int(m.sum())
        return out

    def save(self) -> None:
        torch.save({"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                    "best": self.best, "best_step": self.best_step}, self.run / "state.pt")

    def load(self, path: Path) -> None:
        s = torch.load(path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(s["net"])
        self.opt.load_state_dict(s["opt"])
        self.step, self.best, self.best_step = int(s["step"]), float(s["best"]), int(s["best_step"])

    def _save_weights(self, name: str) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(self.run / name),
                  metadata={"config": json.dumps(asdict(self.cfg)), "step": str(self.step),
                            "split": "trained on CFP identities %d-%d; best step chosen on %d-%d" % (*self.cfg.train_ids, *self.cfg.tune_ids)})

    def run_steps(self) -> Dict[str, float]:
        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        state = self.run / "state.pt"
        if state.is_file():
            self.load(state)
            log.info("resumed at step %d", self.step)
        t0 = time.time()
        last: Dict[str, float] = {}
        with open(self.run / "log.jsonl", "a") as logf:
            while self.step < cfg.steps:
                losses = self.train_step()
                if self.step % 50 == 0:
                    logf.write(json.dumps({"step": self.step, **{k: round(v, 4) for k, v in losses.items()},
                                           "s": round(time.time() - t0, 1)}) + "\n")
                    logf.flush()
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    last = self.validate()
                    if last["tune_err"] < self.best:
                        self.best, self.best_step = last["tune_err"], self.step
                        self._save_weights("best.safetensors")
                    self.save()
                    logf.write(json.dumps({"step": self.step, "validation": last, "best_step": self.best_step}) + "\n")
                    logf.flush()
                    log.info("step %d: tune error %.2f %% (before %.2f; best %.2f at %d)", self.step, last["tune_err"],
                             last["tune_err_before"], self.best, self.best_step)
        return last


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfp", required=True, help="CFP root (Data/Images, Data/Fiducials)")
    ap.add_argument("--run", required=True, help="run folder (resumed if it has a state.pt)")
    ap.add_argument("--init", type=Path, help="start from these tddfa_mb05-layout weights instead of the registered ones")
    for f, v in asdict(FitConfig()).items():
        if f in ("train_ids", "tune_ids"):
            continue
        if f == "marks":
            ap.add_argument("--marks", type=int, nargs="+", default=list(v), help="68-point indices trained on")
            continue
        ap.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = FitConfig(**{f: getattr(args, f) for f in asdict(FitConfig()) if f not in ("train_ids", "tune_ids", "marks")},
                    marks=tuple(args.marks))
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    index = run / "fiducials.npz"
    if index.is_file():
        data = FiducialSet.load(index)
    else:
        data = FiducialSet.build(Path(args.cfp), range(cfg.train_ids[0], cfg.tune_ids[1] + 1), cfg.frontals)
        data.save(index)
    (run / "config.json").write_text(json.dumps({**asdict(cfg), "split": "train CFP 001-350; tune CFP 351-400"}, indent=1))
    last = FitTrainer(cfg, run, data, args.init).run_steps()
    print(json.dumps(last, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
