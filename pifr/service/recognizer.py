"""The models behind the service, and the decision it states.

One :class:`Recogniser` per process: pifr's model getters cache each network once, so every
worker thread shares them. Its methods run on the worker pool (blocking, CPU-bound).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import NoFaceError, PifrError
from ..gallery import Gallery
from ..types import Face
from .store import Template

log = logging.getLogger("pifr.service")

#: How a door event is decided. Reported in each identify response.
POLICY_POOLED = ("pooled: in each image the face with the highest detection score x box area; their embeddings "
                 "pooled (weighted by how frontal each is) into one probe, decided once at the threshold plus "
                 "the shift measured for pooled probes when two or more are pooled")


def choose_faces(faces: Sequence[Sequence[Face]]) -> List[Tuple[int, Face]]:
    """The face of each image a door event is decided on: its highest detection score × box area
    (a sharp, near face beats a small or doubtful one); images without a face give none."""
    out = []
    for i, fs in enumerate(faces):
        if fs:
            out.append((i, max(fs, key=lambda f: float(f.score) * float(f.width) * float(f.height))))
    return out


def face_record(f: Face, image: int, used: bool) -> Dict[str, Any]:
    """A face as the API shows it: box ``[x1, y1, x2, y2]`` in pixels, yaw in degrees."""
    return {"image": image, "bbox": [round(float(v), 1) for v in f.bbox], "score": round(float(f.score), 4),
            "yaw": None if f.yaw is None else round(float(f.yaw), 1), "used": used}


def decision_record(g: Gallery, score: Optional[float], subject: Optional[str], shift: float) -> Dict[str, Any]:
    """The decision for a probe's best ``score`` (``None``: empty gallery) against ``g``'s operating point."""
    thr = float(g.threshold) + float(shift)
    src = g.threshold_source
    far = g.far_per_probe if src == "default" else (g.calibrated_far if src == "calibrated" else None)
    accept = score is not None and score >= thr
    return {"decision": "accept" if accept else "reject", "subject": subject if accept else None,
            "candidate": subject, "score": None if score is None else round(float(score), 5),
            "threshold": round(thr, 5), "far": far, "threshold_source": src,
            "gallery": {"subjects": len(g), "templates": g.templates}}


class Recogniser:
    """pifr's real pipeline: detection, the gallery's embedder and frontalization policy."""

    def warm(self, like: Gallery) -> None:
        """Load every model once before serving (the first request would otherwise pay for it)."""
        from ..detection import DEFAULT_DETECTOR, get_detector

        get_detector(like.detector or DEFAULT_DETECTOR)
        like.pipeline()  # the embedder, and the view source when the policy fuses

    def templates(self, like: Gallery, name: str, images: Sequence[np.ndarray]
                  ) -> Tuple[List[Template], List[Tuple[int, str, str]]]:
        """Each image's template, made as ``like`` makes them; per-image failures as
        ``(index, error type, message)``."""
        out: List[Template] = []
        rejected: List[Tuple[int, str, str]] = []
        for i, r in enumerate(like.pipeline().embed_images(list(images), hash_pixels=True)):  # one batch
            if isinstance(r, PifrError):
                rejected.append((i, type(r).__name__, str(r)))
            else:
                out.append(Template(i, r.embedding, r.image_sha256, r.treatment,  # type: ignore[arg-type]
                                    float("nan") if r.face.yaw is None else float(r.face.yaw)))
        return out, rejected

    def identify(self, g: Gallery, images: Sequence[np.ndarray]) -> Dict[str, Any]:
        """The decision on one door event: see :func:`choose_faces` and :func:`decision_record`."""
        from ..detection import DEFAULT_DETECTOR, detect

        faces = [detect(arr, detector=g.detector or DEFAULT_DETECTOR) for arr in images]
        chosen = choose_faces(faces)
        if not chosen:
            raise NoFaceError(f"no face found in {'the image' if len(images) == 1 else f'any of the {len(images)} images'}")
        score, subject, shift = None, None, 0.0
        if g.templates:
            v, shift = g.probe_embedding([(images[i], f) for i, f in chosen])
            m = g.search_embedding(v, 1, threshold_shift=shift)[0]
            score, subject = m.score, str(m.identity)
        out = decision_record(g, score, subject, shift)
        used = {(i, id(f)) for i, f in chosen}
        out["faces"] = [face_record(f, j, (j, id(f)) in used) for j, fs in enumerate(faces) for f in fs]
        out["policy"] = POLICY_POOLED
        return out

    def verify(self, a: np.ndarray, b: np.ndarray, like: Gallery) -> Dict[str, Any]:
        """:func:`pifr.verify` of the two images with the gallery's embedder and policy."""
        from ..verification import verify

        return verify(a, b, embedder=like.embedder, detector=like.detector, frontalize=like.frontalize,
                      frontalizer=like.frontalizer, yaw_threshold=like.yaw_threshold,
                      fusion_weight=like.fusion_weight).to_dict()
