"""TP-GAN generator speed: forward time per 128×128 crop and training steps per second at each width.

    python benchmarks/tpgan_speed.py [--widths 1.0 0.5 0.25] [--batch 10] [--device auto]

Forward: batch 1 (latency per face) and batch 16 (throughput), eval mode, no grad.
Training: one full generator + patch-discriminator step (all losses but the identity term) on
random inputs of the configured batch size. Prints parameters and fp16 size too.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _harness import save_record, device_description, run_header

from pifr.models.tpgan import Discriminator, Generator, count_parameters, crop_patches
from pifr.train import losses as L
from pifr.alignment import TPGAN_128


def timed(fn, reps: int, sync) -> float:
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", nargs="+", type=float, default=[1.0, 0.5, 0.25])
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="results/tpgan_speed")
    args = ap.parse_args()
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rec = run_header("tpgan_speed", "random tensors", {}, "timing only")
    lm1 = torch.tensor(TPGAN_128.points, dtype=torch.float32, device=dev)[None]
    res = {}
    print(f"\nDevice: {device_description() if dev.type == 'cpu' else torch.cuda.get_device_name(0)}\n")
    print("| width | G params (M) | G fp16 size (MB) | forward ms / face (batch 1) | forward ms / face (batch 16) | train steps / s (batch %d) |" % args.batch)
    print("|---|---|---|---|---|---|")
    for w in args.widths:
        g = Generator(w).to(dev).eval()
        n = count_parameters(g)
        x1 = torch.rand(1, 3, 128, 128, device=dev) * 2 - 1
        x16 = torch.rand(16, 3, 128, 128, device=dev) * 2 - 1
        with torch.inference_mode():
            t1 = timed(lambda: g(x1, lm1), args.reps, sync)
            t16 = timed(lambda: g(x16, lm1.expand(16, 5, 2)), max(1, args.reps // 2), sync) / 16
        g.train()
        d = Discriminator(w).to(dev)
        opt = torch.optim.Adam(list(g.parameters()) + list(d.parameters()), lr=1e-4)
        xb = torch.rand(args.batch, 3, 128, 128, device=dev) * 2 - 1
        yb = torch.rand_like(xb) * 2 - 1
        lmb = lm1.expand(args.batch, 5, 2)

        def step():
            out = g(xb, lmb)
            loss = L.generator_loss(out, yb, target_patches=crop_patches(yb, lmb), fake_logits=d(out["img128"])).total
            loss = loss + L.d_adversarial_loss(d(yb), d(out["img128"].detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        ts = timed(step, max(1, args.reps // 2), sync)
        res[str(w)] = {"params": n, "fp16_mb": n * 2 / 1e6, "forward_ms_b1": 1000 * t1, "forward_ms_b16": 1000 * t16, "train_steps_per_s": 1 / ts}
        print(f"| {w} | {n / 1e6:.1f} | {n * 2 / 1e6:.1f} | {1000 * t1:.0f} | {1000 * t16:.0f} | {1 / ts:.2f} |")
    rec["results"] = res
    save_record(Path(args.out), rec, "tpgan_speed")


if __name__ == "__main__":
    main()
