"""What a TP-GAN training run is: its configuration (:class:`TrainConfig`, every default the
shipped recipe), how a checkpoint is chosen (:data:`SELECTION`) and the columns of its loss log."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional


from ..errors import TrainingError
from . import losses as L

log = logging.getLogger("pifr.train")


def as_floats(logs: Dict[str, Any]) -> Dict[str, float]:
    """A step's logs as plain numbers (waits for the device: call it only on steps that log)."""
    return {k: float(v) for k, v in logs.items()}


def _rows(out: Dict[str, Any], rows: slice) -> Dict[str, Any]:
    """The generator's output dict restricted to some batch rows (nested dicts too)."""
    return {k: _rows(v, rows) if isinstance(v, dict) else v[rows] for k, v in out.items()}


@dataclass
class TrainConfig:
    pack: str = ""
    val_pack: str = ""
    train_identities: str = "1-350"  # CFP numbering; "" = every identity in the pack
    val_identities: str = "351-400"
    out: str = "runs/tpgan"
    width: float = 0.25
    # Generator skip connections (models.tpgan.TPGANConfig.skips): 128 = the paper; lower values
    # narrow the path a profile can be copied through and depart from TP-GAN.
    skips: int = 128
    batch: int = 10
    steps: int = 1000
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    g_steps_per_d: int = 2  # generator updates per discriminator update (the official code uses 2)
    adversarial: str = "patch"  # "patch" | "began" | "none"
    identity_net: str = "dlib_resnet"  # an embedder name, "a+b" for an ensemble (losses.IdentityEnsemble), or "none"
    # The identity network's weights: a registered name (e.g. "dlib_resnet_fp16", the shipped fp16
    # copy of dlib's ResNet, for machines without face-recognition-models), a file, or "" for the
    # embedder's own registered weights.
    identity_weights: str = ""
    weights: Dict[str, float] = field(default_factory=lambda: L.LossWeights().to_dict())
    sym_space: str = "laplacian"
    # Frontal→other-frontal pairs as well. Off by default: on CFP they outnumber the profile pairs
    # 31,500 to 14,000, and a generator fed mostly those learns to copy its input.
    frontal_inputs: bool = False
    # Weight of the pixel L1 terms on identity-level pairs (CFP: the target is another photo of
    # the person, so its pixels show another pose, light and background); pixel-aligned pairs
    # (renders, Multi-PIE) keep 1. 1 = the paper, where every pair is pixel-aligned; 0 leaves
    # identity-level pairs to the identity, symmetry and adversarial terms.
    pixel_on_identity_pairs: float = 1.0
    # Photometric augmentation (train/augment.py): 0 = off, 1 = its documented ranges. Colour and
    # contrast move input and target together; side light, blur and noise touch the input only.
    augment: float = 0.0
    # The identity network sees each step's output, target and input through one random small
    # view per sample (losses.RandomView: shift, scale, turn, colour gain; 1 = its documented
    # ranges, 0 = the network's fixed view), so a mark that fools one fixed view stops paying.
    id_view_jitter: float = 0.0
    id_classes: bool = False  # add the encoder identity head (cross-entropy on training identities)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # used on CUDA only
    log_every: int = 10
    sample_every: int = 200
    ckpt_every: int = 200
    val_every: int = 200
    val_pairs: int = 64
    resume: bool = True
    # Warm start: networks and optimiser states from another run's checkpoint.pt; step count, data
    # order and random state start afresh (use it when the data or losses change; resume otherwise).
    init: str = ""
    # Wall-clock budget in minutes (0 = none): after the step that passes it the run saves its
    # checkpoint and generator and returns, so a run fits a time-limited job and the next job
    # (same ``out``) resumes it.
    max_minutes: float = 0.0
    # Decay of an exponential moving average of the generator's weights (0 = off; 0.999 averages
    # over ~1,000 steps). When on, validation, model selection, samples and the saved generator use
    # the average, and validation also reports the live weights (``val_rank1_live``).
    ema: float = 0.0

    @classmethod
    def from_args(cls, config: Optional[str], overrides: List[str]) -> "TrainConfig":
        data: Dict[str, Any] = json.loads(Path(config).read_text()) if config else {}
        types = {f.name: f.type for f in fields(cls)}
        for ov in overrides:
            k, _, v = ov.partition("=")
            if k.startswith("weights."):
                data.setdefault("weights", L.LossWeights().to_dict())[k[8:]] = float(v)
                continue
            if k not in types:
                raise TrainingError(f"unknown config key {k!r}; known: {sorted(types)}")
            t = types[k]
            data[k] = (v.lower() in ("1", "true", "yes")) if t in (bool, "bool") else (
                int(v) if t in (int, "int") else float(v) if t in (float, "float") else v)
        return cls(**data)


#: Model selection on the validation identities: rank-1 first (discrimination), identity cosine
#: to break ties (:func:`selection_score`). Kept in checkpoints so a resumed run compares like with like.
SELECTION = "val_rank1_output + 1e-3 * val_id_cos_output"


def selection_score(val: Dict[str, float]) -> float:
    """:data:`SELECTION` evaluated on :meth:`Trainer.validate`'s output (NaN when absent)."""
    return val.get("val_rank1_output", math.nan) + 1e-3 * val.get("val_id_cos_output", math.nan)



CSV_FIELDS = ["step", "seconds", "d", "began_k", "began_M", "g_pixel", "g_sym", "g_adv", "g_ip", "g_id_cos", "g_tv", "g_ce",
              "g_total", "val_id_cos_output", "val_id_cos_input", "val_rank1_output", "val_rank1_input", "val_l1",
              "val_rank1_live", "val_id_cos_live", "val_nearer_output", "val_nearer_live"]


