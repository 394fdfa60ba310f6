"""Which of a gallery's templates were made otherwise than a probe of the same photo is made now.

Each template keeps, besides its vector, the fingerprint of its treatment
(:meth:`pifr.policy.Policy.treatment`: the photo alone, or its views fused by a given rule from
a given view source) and its face's yaw (degrees; NaN when unknown). A template is stale when
the treatment the gallery's policy gives a face of that yaw now has another fingerprint — a
re-tuned rule, another 3D fit network, refiner or generator, or a rule that now fuses a face it
left raw. Records:

* a 16-hex-digit treatment fingerprint (:data:`pifr.policy.RAW_TREATMENT` for the photo alone);
* :data:`EXTERNAL` — given to :meth:`Gallery.add_embeddings` (how it was made is unknown);
* ``None`` — unknown (a file from a pifr that did not record it). Neither is ever judged.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from ..errors import PifrError
from ..policy import RAW_TREATMENT, Policy

log = logging.getLogger("pifr")

#: The record of a template given as a vector.
EXTERNAL = "external"


def legacy_record(record: Optional[str]) -> Tuple[Optional[str], float]:
    """``(record, yaw)`` of a view record written by pifr before treatments were fingerprints
    (``"raw"``, ``"auto-raw:<|yaw|>"``, ``"<mode>:<fingerprint>"``); a current record is returned
    as it is, with an unknown (NaN) yaw."""
    if record is None or record == EXTERNAL or ":" not in record and record != "raw":
        return record, math.nan
    if record == "raw":
        return RAW_TREATMENT, math.nan
    mode, _, rest = record.partition(":")
    if mode == "auto-raw":
        try:
            return RAW_TREATMENT, float(rest)
        except ValueError:
            return None, math.nan  # an odd string in a file: unknown, as elsewhere
    return (rest or None), math.nan


def stale_counts(templates: Iterable[Tuple[str, Optional[str], float]], policy: Policy,
                 view_key: Callable[[], Dict[str, Any]]) -> Dict[str, int]:
    """Stale templates counted by identity, from ``(identity, record, yaw)`` triples, against
    ``policy`` with views made as ``view_key()`` says (:func:`pifr.views.view_key`, called only
    when needed). Never raises for a view source that cannot be identified here (a generator
    file gone): its fused templates are not judged."""
    out: Dict[str, int] = {}
    key: Any = None  # False: unknown here
    for label, record, yaw in templates:
        if record is None or record == EXTERNAL:
            continue
        known_yaw = yaw is not None and not math.isnan(yaw)
        if record == RAW_TREATMENT and not known_yaw:
            continue  # a raw template of a face of unknown yaw: nothing to compare
        fused_now = policy.fuses(yaw) if known_yaw else policy.needs_views
        if fused_now and key is None:
            try:
                key = view_key()
            except PifrError as e:  # e.g. a generator file that is gone: its probes cannot be made either
                log.debug("view key unknown: %s", e)
                key = False
        if fused_now and key is False:
            continue
        now = policy.treatment(yaw if known_yaw else None, key or None)
        if now != record:
            out[label] = out.get(label, 0) + 1
    return out


def warn_stale(where: str, stale: Dict[str, int]) -> None:
    """Log that the gallery at ``where`` holds ``stale`` templates (by identity) and what to do.
    A warning, not an error: the gallery still works, and frontal photos' templates are raw."""
    if stale:
        log.warning("%s: %d templates of %d identities were made otherwise than this pifr makes a probe of the same "
                    "photo now (another frontalization rule, 3D fit, refiner or generator), so they no longer match; "
                    "if the gallery was enrolled with a frontalizer weights file (or with \"refined\" by a pifr "
                    "that did not record it), load it with the same frontalizer=; "
                    "else re-enrolling those photos (remove(), then enroll(): the same pixels are otherwise "
                    "skipped as duplicates) rebuilds them (Gallery.stale_templates lists them)",
                    where, sum(stale.values()), len(stale))


def saved_frontalizer(saved: Optional[str], where: str) -> Optional[str]:
    """The frontalizer for a gallery saved with the built-in view ``saved`` (``None``: none
    recorded): ``"refined"`` falls back to the plain 3D render (``None``) where no refiner is
    installed, with a warning naming ``where``; its fused templates are then listed stale."""
    if saved == "refined":
        from ..refinement import refiner_available

        if not refiner_available():
            log.warning("%s: enrolled with the refined view, but no refiner is installed here: probes use the "
                        "plain 3D render (install the refiner, or pass frontalizer=)", where)
            return None
    return saved
