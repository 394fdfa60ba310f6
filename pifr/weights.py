"""Weights registry: typed specs from ``weights/manifest.json``, resolution and sha256 checks.

Resolution order for a registered name: an explicit path → ``$PIFR_WEIGHTS_DIR/<file>`` →
the repository's ``weights/<file>`` → the installed package data (``pifr_weights``) → the
Python package named by the spec's ``location`` (``package:<module>/<dir>``). Nothing is
ever downloaded. Files are checked against the registry's sha256 before use.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import UnknownModelError, WeightsChecksumError, WeightsFormatError, WeightsNotFoundError

log = logging.getLogger("pifr")

_REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class WeightSpec:
    """One registered weight file: where it comes from, its checksum, format and licence (see
    ``weights/manifest.json``). What a network expects as input (template, size, normalisation)
    and its threshold are not here: the code that uses the network is their one source
    (:mod:`pifr.embedders`' table and the network's own ``forward``)."""

    name: str
    task: str
    arch: str
    file: str
    sha256: Optional[str]
    format: str
    location: str
    source: str = ""
    source_sha256: str = ""
    licence: str = ""
    training_data: str = ""
    reported: Dict[str, Any] = field(default_factory=dict)
    model_card: str = ""
    #: ``{"weights": …, "training_data": …}``, each ``"open"``, ``"research-only"``, ``"unstated"``
    #: (nobody upstream says) or ``"none"`` (no training data): what a commercial user must check.
    terms: Dict[str, str] = field(default_factory=dict)

    @property
    def research_only(self) -> bool:
        """Whether its weights or training data carry research-only (non-commercial) terms."""
        return "research-only" in self.terms.values()

    @property
    def user_supplied(self) -> bool:
        return self.location == "user"


def _manifest_path() -> Path:
    if (_REPO_WEIGHTS / "manifest.json").is_file():
        return _REPO_WEIGHTS / "manifest.json"
    try:
        from importlib.resources import files

        p = Path(str(files("pifr_weights") / "manifest.json"))
        if p.is_file():
            return p
    except ModuleNotFoundError:
        pass
    raise WeightsNotFoundError("weights/manifest.json not found: is pifr installed with its package data?")


@functools.lru_cache(maxsize=1)
def registry() -> Dict[str, WeightSpec]:
    """All registered weights by name (read once)."""
    data = json.loads(_manifest_path().read_text())
    if data.get("schema") != 1:
        raise WeightsFormatError(f"unsupported weights manifest schema {data.get('schema')!r}")
    return {e["name"]: WeightSpec(**e) for e in data["weights"]}


def get_spec(name: str) -> WeightSpec:
    try:
        return registry()[name]
    except KeyError:
        raise UnknownModelError(f"no weights registered as {name!r}; known: {sorted(registry())}") from None


def list_weights(task: Optional[str] = None) -> List[WeightSpec]:
    return [s for s in registry().values() if task is None or s.task == task]


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _sha_cached(path: str, size: int, mtime: float) -> str:
    return sha256_file(path)


def candidates(spec: WeightSpec, path: Optional[Union[str, Path]] = None) -> List[Path]:
    """Where ``spec``'s file is looked for, in order."""
    if path is not None:
        return [Path(path)]
    out: List[Path] = []
    env = os.environ.get("PIFR_WEIGHTS_DIR")
    if env:
        out.append(Path(env) / spec.file)
    out.append(_REPO_WEIGHTS / spec.file)
    try:
        from importlib.resources import files

        out.append(Path(str(files("pifr_weights") / spec.file)))
    except ModuleNotFoundError:
        pass
    if spec.location.startswith("package:"):
        mod, _, sub = spec.location[len("package:"):].partition("/")
        try:
            from importlib.resources import files

            out.append(Path(str(files(mod))) / sub / spec.file)
        except ModuleNotFoundError:
            pass
    # An editable install's package data is the repository's weights/: say each place once.
    return list(dict.fromkeys(out))


def resolve(name_or_spec: Union[str, WeightSpec], path: Optional[Union[str, Path]] = None,
            verify: bool = True) -> Tuple[WeightSpec, Path]:
    """Find and verify a registered weight file.

    Args:
        name_or_spec: registry name or spec.
        path: explicit file (takes precedence over every search location).
        verify: check sha256 (where the registry knows it).

    Returns:
        ``(spec, path)``.

    Raises:
        WeightsNotFoundError: in no location; the message lists where it looked and the expected sha256.
        WeightsChecksumError: found, but its sha256 differs.
    """
    spec = name_or_spec if isinstance(name_or_spec, WeightSpec) else get_spec(name_or_spec)
    tried = candidates(spec, path)
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        where = ", ".join(str(p) for p in tried)
        sha = spec.sha256 or "not recorded (user-supplied file)"
        hint = " Obtain it from its publisher and put it in $PIFR_WEIGHTS_DIR or pass its path." if spec.user_supplied else ""
        raise WeightsNotFoundError(f"weights {spec.name!r}: file {spec.file} (sha256 {sha}) not found; looked in: {where}.{hint}")
    if verify and spec.sha256:
        st = found.stat()
        got = _sha_cached(str(found), st.st_size, st.st_mtime)
        if got != spec.sha256:
            raise WeightsChecksumError(f"{found}: sha256 {got} differs from the registry's {spec.sha256} for {spec.name!r}")
    elif verify and not spec.sha256:
        log.warning("weights %s: no sha256 on record for this user-supplied file; loading %s unverified", spec.name, found)
    return spec, found


def load_state_dict(name_or_spec: Union[str, WeightSpec], path: Optional[Union[str, Path]] = None) -> Tuple[WeightSpec, Dict[str, Any]]:
    """Resolve, verify and read a weight file into a tensor dict (never unpickles arbitrary objects)."""
    spec, p = resolve(name_or_spec, path)
    try:
        if spec.format == "safetensors" or p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return spec, load_file(str(p))
        if spec.format == "dlib_dat":
            from .models.dlib_resnet import read_dlib_dat

            return spec, read_dlib_dat(p)
        import torch

        obj = torch.load(p, map_location="cpu", weights_only=True)
    except WeightsFormatError:
        raise
    except Exception as e:  # any parser failure is a bad file from the caller's point of view
        raise WeightsFormatError(f"{p}: cannot read as {spec.format} ({type(e).__name__}: {e})") from e
    # Training checkpoints wrap the weights beside epoch counters and optimiser state.
    for key in ("state_dict", "net_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WeightsFormatError(f"{p}: expected a state dict, got {type(obj).__name__}")
    return spec, {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(model: Any, name_or_spec: Union[str, WeightSpec], path: Optional[Union[str, Path]] = None,
              ignore: Tuple[str, ...] = ()) -> WeightSpec:
    """Load registered weights into ``model`` strictly (keys listed in ``ignore`` may be absent or extra)."""
    spec, sd = load_state_dict(name_or_spec, path)
    sd = {k: v for k, v in sd.items() if not any(k.startswith(i) for i in ignore)}
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not any(k.startswith(i) for i in ignore)]
    unexpected = [k for k in sd if k not in own]
    bad = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise WeightsFormatError(
            f"weights {spec.name!r} do not fit {type(model).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(bad)} wrong shapes (e.g. {bad[:3]})"
        )
    model.load_state_dict(sd, strict=False)
    return spec
