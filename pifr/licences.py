"""What terms the weights behind each part of the default pipeline come with — for an operator who
must know whether a configuration has research-only (non-commercial) parts.

The terms themselves live in ``weights/manifest.json`` (:attr:`pifr.weights.WeightSpec.terms`):
this module only says which weights each role of the pipeline uses. Loads no network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .weights import WeightSpec, get_spec


@dataclass(frozen=True)
class Component:
    """One part of the pipeline: its ``role`` (what it does, and when it runs) and its weights."""

    role: str
    spec: WeightSpec

    @property
    def research_only(self) -> bool:
        return self.spec.research_only


def default_components(embedder: Optional[str] = None) -> List[Component]:
    """The weights :func:`pifr.verify`, :class:`pifr.Gallery`, :func:`pifr.frontalize` and
    :func:`pifr.rotate` use by default, by role (``embedder``: another embedder's row instead)."""
    from .embedders import DEFAULT_EMBEDDER, embedder_spec

    name = embedder or DEFAULT_EMBEDDER
    return [
        Component("face detection", get_spec("retinaface_mnet025")),
        Component('yaw and 3D fit (frontalize="auto", rotate, frontalize)', get_spec("tddfa_mb05")),
        Component('3D face (frontalize="auto", rotate, frontalize)', get_spec("face3d_bfm")),
        Component(f"embedding ({name})", get_spec(embedder_spec(name).weights)),
        Component("refiner (rotate, frontalize images)", get_spec("refiner")),
    ]


def open_embedders() -> List[str]:
    """Built-in embedders whose weights and training data carry no research-only terms that anyone
    states (``"unstated"`` training data included: see each model card)."""
    from .embedders import _EMBEDDERS

    out = []
    for name, entry in _EMBEDDERS.items():
        try:
            spec = get_spec(entry.weights)
        except Exception:  # noqa: BLE001 - an embedder without a manifest row is not offered
            continue
        if not spec.research_only and not spec.user_supplied:
            out.append(name)
    return out
