"""Export a trained TP-GAN generator for shipping: fp16 (or fp32) safetensors with its config.

    python scripts/export_generator.py runs/x/generator_best.safetensors weights/tpgan_cfp_w025.safetensors --fp16

Keeps the training file's metadata (config, step, validation score) and adds the dtype and the
source file's sha256; prints the new file's sha256 and size for weights/manifest.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from pifr.weights import sha256_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--fp16", action="store_true", help="store half-precision weights (loaded back as float32)")
    args = ap.parse_args()
    with safe_open(args.src, "pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "config" not in meta:
        raise SystemExit(f"{args.src}: no generator config in its metadata (not written by pifr-train?)")
    import torch

    dtype = torch.float16 if args.fp16 else torch.float32
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    meta.update(dtype=str(dtype).replace("torch.", ""), exported_from=Path(args.src).name, source_sha256=sha256_file(Path(args.src)))
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, args.dst, metadata=meta)
    n = sum(v.numel() for v in state.values())
    print(json.dumps({"file": args.dst, "sha256": sha256_file(Path(args.dst)), "bytes": Path(args.dst).stat().st_size,
                      "parameters": n, "dtype": meta["dtype"], "config": json.loads(meta["config"]), "step": meta.get("step")}, indent=1))


if __name__ == "__main__":
    main()
