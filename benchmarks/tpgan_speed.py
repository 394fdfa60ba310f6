"""TP-GAN generator speed: forward time per 128×128 crop and training steps per second at each width.

    python benchmarks/tpgan_speed.py [--widths 1.0 0.5 0.25] [--batch 10] [--device auto]

Forward: batch 1 (latency per face) and batch 16 (throughput), eval mode, no grad.
Training: one full generator + patch-discriminator step (all losses but the identity term) on
random inputs of the configured batch size. Prints parameters and fp16 size too.
With --generator (a generator.safetensors) or --installed: the whole ``pifr.frontalize()`` per
face (load, detect, yaw, align, generate) on the example photos, median of --reps rounds; the
same photos as one list (``pifr.frontalize([...])``: generator batched); and
``frontalize_crops`` throughput on batches of 64 aligned crops.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401
from benchmarks._harness import save_record, device_description, run_header

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


def end_to_end(weights, dev, reps: int) -> dict:
    """Median seconds of one ``pifr.frontalize()`` call per example photo, and batched crop throughput."""
    import statistics

    import numpy as np

    import pifr
    from pifr.generator import get_frontalizer

    photos = sorted((Path(__file__).resolve().parents[1] / "examples" / "images").glob("*.png"))
    pifr.frontalize(photos[0], weights=weights, device=dev)  # loads the detector, pose net and generator once
    times = []
    for _ in range(max(1, reps)):
        for p in photos:
            t = time.perf_counter()
            pifr.frontalize(p, weights=weights, device=dev)
            times.append(time.perf_counter() - t)
    batch = [p for _ in range(max(1, reps)) for p in photos]
    t = time.perf_counter()
    pifr.frontalize(batch, weights=weights, device=dev)  # detection per image, generator in batches of 32
    list_ms = 1000 * (time.perf_counter() - t) / len(batch)
    fr = get_frontalizer(weights, dev)
    crops = np.random.default_rng(0).integers(0, 256, (64, 128, 128, 3), dtype=np.uint8)
    lms = np.repeat(np.asarray(TPGAN_128.points, np.float32)[None], 64, 0)
    fr.frontalize_crops(crops, lms, [60.0] * 64)
    t = time.perf_counter()
    fr.frontalize_crops(crops, lms, [60.0] * 64)
    per_s = 64 / (time.perf_counter() - t)
    med = statistics.median(times)
    print(f"\npifr.frontalize() end to end ({fr.name}, width {fr.net.config.width}): {1000 * med:.0f} ms per face "
          f"(median of {len(times)} calls on {len(photos)} example photos); {list_ms:.0f} ms per face as one list of "
          f"{len(batch)}; generator alone, batches of 64 crops: {per_s:.0f} faces/s")
    return {"generator": fr.name, "width": fr.net.config.width, "ms_per_face_median": 1000 * med, "calls": len(times),
            "ms_per_face_list": list_ms,
            "crops_per_s_batch64": per_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", nargs="+", type=float, default=[1.0, 0.5, 0.25])
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="results/tpgan_speed")
    ap.add_argument("--generator", default=None, help="time pifr.frontalize() end to end with this generator file")
    ap.add_argument("--installed", action="store_true", help="time pifr.frontalize() with the installed frontalizer")
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
    if args.generator or args.installed:
        rec["frontalize"] = end_to_end(None if args.installed else args.generator, dev, args.reps)
    save_record(Path(args.out), rec, "tpgan_speed")


if __name__ == "__main__":
    main()
