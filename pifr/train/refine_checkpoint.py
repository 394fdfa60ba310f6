"""The refiner trainer's checkpoints: one safetensors file with the networks, the optimisers'
moments (bf16) and the run's config and meta; and the export of its generator as a refiner file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import torch

from ..models.refiner import Refiner, RefinerConfig, save_refiner


CHECKPOINT_FORMAT = "pifr-refine-checkpoint"


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a :meth:`RefineTrainer.save_checkpoint` file (not a bare refiner)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == CHECKPOINT_FORMAT
    except Exception:  # noqa: BLE001 - any unreadable file is "not a checkpoint"; start_from says why
        return False


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> Dict[str, torch.Tensor]:
    """Adam's moments as bf16 (fp16 would flush the squared-gradient averages to zero) and steps."""
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{prefix}.{i}.{k}"] = (v.to(torch.bfloat16) if v.is_floating_point() and v.ndim else v.float().reshape(1)).contiguous().cpu()
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], prefix: str) -> bool:
    sd = opt.state_dict()
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            i, k = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(i), {})[k] = v.float().reshape(()) if k == "step" else v.float()
    if not state:
        return False
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
    return True


def export_refiner(checkpoint: Path, out: Path) -> Dict[str, object]:
    """Write the generator of a :meth:`RefineTrainer.save_checkpoint` file as a refiner weights
    file (:func:`pifr.models.refiner.save_refiner`, fp16, what ``pifr.frontalize(method="refined",
    weights=...)`` loads); returns its meta (step, config, data)."""
    from safetensors import safe_open

    from ..errors import TrainingError

    if not is_checkpoint(Path(checkpoint)):
        raise TrainingError(f"{checkpoint}: not a refiner training checkpoint ({CHECKPOINT_FORMAT})")
    with safe_open(str(checkpoint), framework="pt") as f:
        md = f.metadata()
        g = {k[2:]: f.get_tensor(k) for k in f.keys() if k.startswith("G.")}
    cfg = json.loads(md["config"])
    net = Refiner(RefinerConfig(arch=cfg["arch"], width=cfg["width"], heatmaps=cfg["heatmaps"]))
    own = net.state_dict()
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in g.items()})
    meta = json.loads(md.get("meta", "{}"))
    save_refiner(net, Path(out), meta)
    return meta


