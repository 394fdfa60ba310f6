"""The face pipeline: images → faces → 3D fits → views → embeddings, each stage batched.

Every recogniser in pifr — :func:`pifr.verify`, :func:`embed`, :func:`embed_many`,
:class:`pifr.Gallery`, the CLI and the service — embeds faces through one :class:`Pipeline`,
which applies one :class:`pifr.policy.Policy`:

1. **faces** — each image is loaded and its faces detected (RetinaFace batches images of one
   size); one face per image is chosen (largest, or nearest the centre);
2. **fit** — one 3DDFA_V2 pass over every chosen face of every image gives each face its yaw and,
   for the faces the policy fuses, the 3D fit (the same regression serves both);
3. **views** — the fused faces' views are made by the view source (:mod:`pifr.views`);
4. **embedding** — every aligned face and every view go through the embedder together,
   in passes of a size the device runs fastest (:data:`CPU_NET_BATCH` on a CPU);
5. a fused face's embedding is normalise((1 − w)·raw + w·mean of its views' embeddings).

One bad image never stops a batch: its item is the typed error it raised.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InvalidArgumentError, InvalidPolicyError, NoFaceError, PifrError
from .image import ImageLike, load_image
from .policy import DEFAULT_FRONTALIZE, RAW_TREATMENT, Policy, resolve_policy
from .pooling import fuse_embeddings, pool_faces, pool_views
from .types import Face

log = logging.getLogger("pifr")

#: Network passes on a CPU take at most this many crops: past it, one thread gets slower per crop
#: (SFace at one thread: 16 ms a crop at 1–8, 27 at 64, 40 at 256; 3DDFA fastest at 8 —
#: ``benchmarks/pipeline.py``), while a GPU takes the whole batch.
CPU_NET_BATCH = 8

#: One person's photos: an image, or a list or tuple of images (the frames of one door event),
#: each possibly with its face already found (an ``(image, Face)`` pair).
Subject = Union[ImageLike, Sequence[Any]]


@dataclass(frozen=True)
class FaceEmbedding:
    """One face through the pipeline.

    Attributes:
        embedding: ``(dim,)`` float32, unit L2 norm.
        face: the face, with its yaw (degrees).
        fused: whether its views were fused in (the policy's ``"auto"`` past its yaw threshold, or ``"always"``).
        treatment: the policy's fingerprint of what was done to it (:meth:`pifr.policy.Policy.treatment`).
        threshold_shift: what a decision threshold moves by for this face as a probe.
        image_sha256: sha256 of the decoded pixels (when asked for), to find a photo enrolled twice.
    """

    embedding: np.ndarray
    face: Face
    fused: bool
    treatment: str
    threshold_shift: float
    image_sha256: Optional[str] = None


@dataclass(frozen=True)
class Event:
    """One probe made of one person's frames (:meth:`Pipeline.embed_event`).

    Attributes:
        embedding: ``(dim,)`` float32 unit vector: the frames' faces pooled (:func:`pifr.pooling.pool_faces`).
        faces: the :class:`FaceEmbedding` of each frame used, in input order.
        threshold_shift: the largest shift a fused face needs, plus the policy's event shift when
            two faces or more were pooled.
    """

    embedding: np.ndarray
    faces: Tuple[FaceEmbedding, ...]
    threshold_shift: float

    @property
    def fused(self) -> bool:
        return any(f.fused for f in self.faces)


def pixels_sha256(arr: np.ndarray) -> str:
    """sha256 of an image's decoded pixels and shape (hex)."""
    return hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()


def check_images(images: Any, what: str = "embed_many") -> Sequence[Any]:
    """``images`` if it is a sequence of images. Raises InvalidArgumentError for one image (a str
    is iterable too: each character would be tried as a path)."""
    if isinstance(images, (str, bytes, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim != 4):
        raise InvalidArgumentError(f"{what} takes a sequence of images, got a single {type(images).__name__}; "
                                   "wrap it in a list")
    return images


class Pipeline:
    """Images to embeddings under one policy. Models load once (cached getters); a pipeline is
    cheap to build and safe to share between threads.

    Args:
        embedder: registry name (default :data:`pifr.embedders.DEFAULT_EMBEDDER`).
        frontalize, yaw_threshold, fusion_weight: the policy (:func:`pifr.policy.resolve_policy`).
        frontalizer: the view source's name (:func:`pifr.views.parse_view`); built here when the
            policy can fuse, so a missing refiner or generator fails before any image.
        detector: detector name (default :data:`pifr.detection.DEFAULT_DETECTOR`).
        batch_size: images a stage takes at once; on a GPU also the crops a network pass takes (on
            a CPU at most :data:`CPU_NET_BATCH`).
        policy: a :class:`pifr.policy.Policy` to apply instead of the one ``frontalize``,
            ``yaw_threshold`` and ``fusion_weight`` resolve to (e.g. a rule being measured).

    Raises:
        InvalidPolicyError, UnknownModelError, WeightsError: a bad policy, embedder or view source.
    """

    def __init__(self, embedder: Optional[str] = None, *, frontalize: str = DEFAULT_FRONTALIZE,
                 frontalizer: Any = None, yaw_threshold: Optional[float] = None, fusion_weight: Optional[float] = None,
                 detector: Optional[str] = None, device: Any = None, batch_size: int = 64,
                 policy: Optional[Policy] = None) -> None:
        from .detection import DEFAULT_DETECTOR
        from .embedders import DEFAULT_EMBEDDER, get_embedder
        from .views import parse_view

        kind = parse_view(frontalizer)[0]
        if policy is None:
            policy = resolve_policy(embedder or DEFAULT_EMBEDDER, frontalize, kind,
                                    yaw_threshold=yaw_threshold, fusion_weight=fusion_weight)
        elif (embedder is not None and embedder != policy.embedder) or policy.view != kind:
            raise InvalidPolicyError(f"the policy is for embedder {policy.embedder!r} with view {policy.view!r}, "
                                     f"not {embedder!r} with {kind!r}")
        self.policy: Policy = policy
        self.embedder = get_embedder(policy.embedder, device)
        self.frontalizer = frontalizer
        self.detector = detector or DEFAULT_DETECTOR
        self.device = device
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        from ._device import resolve_device

        on_gpu = resolve_device(device).type != "cpu"
        self.net_batch = batch_size if on_gpu else min(batch_size, CPU_NET_BATCH)
        self.views = None
        if self.policy.needs_views:
            from .views import get_view_source

            self.views = get_view_source(frontalizer, device)
        self._view_key: Optional[dict] = None

    # ------------------------------------------------------------------ stage 1: faces
    def faces(self, images: Sequence[Any], *, select: str = "largest", retry_min_score: Optional[float] = None,
              names: Optional[Sequence[str]] = None) -> List[Union[Tuple[np.ndarray, Face], PifrError]]:
        """Each item's image (``(H, W, 3)`` uint8 RGB) and chosen face (without yaw), or the error
        it raised. An item may be an ``(image, Face)`` pair: its face is kept.

        Args:
            select: ``"largest"`` or ``"center"`` (:func:`pifr.detection.pick_face`).
            retry_min_score: where nothing is found at the detector's default confidence, detect
                once more at this cut-off (``None``: no retry).
            names: labels for error messages (default ``"image <i>"``)."""
        from .detection import get_detector, pick_face

        out: List[Any] = [None] * len(images)
        todo: List[Tuple[int, np.ndarray]] = []
        for i, item in enumerate(images):
            try:
                if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Face):
                    out[i] = (load_image(item[0]), item[1])
                else:
                    todo.append((i, load_image(item)))
            except PifrError as e:
                out[i] = e
        det = get_detector(self.detector, self.device)
        found = det.detect_many([a for _, a in todo], batch_size=self.net_batch) if todo else []
        for (i, arr), faces in zip(todo, found):
            if not faces and retry_min_score is not None:
                faces = det(arr, min_score=retry_min_score)
            try:
                out[i] = (arr, pick_face(faces, arr.shape, select))
            except NoFaceError:
                out[i] = NoFaceError(f"no face found in {names[i] if names else f'image {i}'}")
        return out

    # ------------------------------------------------------------------ stages 2–5: fit, views, embedding
    def view_key(self) -> dict:
        """What makes this pipeline's views (:func:`pifr.views.view_key`), found once."""
        if self._view_key is None:
            from .views import view_key

            self._view_key = view_key(self.frontalizer)
        return self._view_key

    def embed_faces(self, items: Sequence[Tuple[np.ndarray, Face]], *, names: Optional[Sequence[str]] = None,
                    hash_pixels: bool = False) -> List[Union[FaceEmbedding, PifrError]]:
        """Each ``(image, face)``'s :class:`FaceEmbedding` under the policy, or the error it raised
        (FitError: the 3D fit refused a face the policy fuses). A face without yaw gets one (3DDFA_V2)."""
        from .face3d import face_model, fit_from_params
        from .pose import regress_faces, yaw_from_params

        pol, emb = self.policy, self.embedder
        label = (lambda i: names[i]) if names else (lambda i: "the image" if len(items) == 1 else f"image {i}")
        faces = [f for _, f in items]
        # One 3DDFA pass gives the yaw of faces without one and the fit of faces to fuse.
        need_yaw = [i for i, f in enumerate(faces) if f.yaw is None]
        need_fit = [i for i, f in enumerate(faces) if f.yaw is not None and pol.fuses(f.yaw)]
        wants_fit = self.views is not None and getattr(self.views, "needs_fit", False)
        todo = need_yaw + (need_fit if wants_fit else [])
        params = dict(zip(todo, regress_faces([items[i] for i in todo], self.device, self.net_batch)))
        for i in need_yaw:
            faces[i] = faces[i].with_yaw(yaw_from_params(params[i]))
        out: List[Any] = [None] * len(items)
        crops, spans = [], []  # spans[i] = (first row, number of view rows) of item i in crops
        for i, (arr, _) in enumerate(items):
            f = faces[i]
            fused = pol.fuses(f.yaw)
            try:
                views = None
                if fused:
                    fit = None
                    if wants_fit:
                        p = params[i] if i in params else regress_faces([(arr, f)], self.device)[0]
                        fit = fit_from_params(p, arr.shape, f, label(i), face_model())
                    views = self.views.view_crops(arr, f, emb.template, pol.view_yaws(f.yaw), fit=fit)  # type: ignore[union-attr]
                raw = emb.align(arr, f)
            except PifrError as e:
                out[i] = e
                continue
            spans.append((i, len(crops), 0 if views is None else len(views)))
            crops.append(raw)
            if views is not None:
                crops.extend(views)
        vecs = emb.embed_crops(np.stack(crops), self.net_batch) if crops else None
        key = self.view_key() if any(n for _, _, n in spans) else None
        for i, start, n in spans:
            f = faces[i]
            if n == 0:
                v, treatment = vecs[start], RAW_TREATMENT  # type: ignore[index]
            else:
                view = pool_views(vecs[start + 1:start + 1 + n])  # type: ignore[index]
                v = fuse_embeddings(vecs[start], view, pol.fusion_weight)  # type: ignore[index]
                treatment = pol.treatment(f.yaw, key)
            out[i] = FaceEmbedding(np.asarray(v, np.float32), f, n > 0, treatment, pol.threshold_shift(n > 0),
                                   pixels_sha256(items[i][0]) if hash_pixels else None)
        return out

    def embed_images(self, images: Sequence[Any], *, select: str = "largest", retry_min_score: Optional[float] = None,
                     names: Optional[Sequence[str]] = None, hash_pixels: bool = False
                     ) -> List[Union[FaceEmbedding, PifrError]]:
        """:meth:`faces` then :meth:`embed_faces`: each item's :class:`FaceEmbedding` or error, in input order."""
        located = self.faces(images, select=select, retry_min_score=retry_min_score, names=names)
        ok = [i for i, r in enumerate(located) if not isinstance(r, PifrError)]
        done = self.embed_faces([located[i] for i in ok], names=[names[i] for i in ok] if names else
                                [f"image {i}" if len(images) > 1 else "the image" for i in ok], hash_pixels=hash_pixels)
        out: List[Any] = list(located)
        for i, r in zip(ok, done):
            out[i] = r
        return out

    def embed_one(self, img: Any, what: str = "the image") -> FaceEmbedding:
        """The :class:`FaceEmbedding` of ``img``'s largest face (or of an ``(image, Face)`` pair's face).

        Raises:
            InvalidImageError / NoFaceError / FitError: as the image fails."""
        r = self.embed_images([img], names=[what])[0]
        if isinstance(r, PifrError):
            raise r
        return r

    def embed_event(self, src: Subject, what: str = "the probe") -> Event:
        """One probe for one person: ``src`` an image, or a list or tuple of one person's frames
        (images, or ``(image, Face)`` pairs), each frame's face under the policy, pooled when
        there are several. A frame that fails is left out (logged) while others remain.

        Raises:
            InvalidArgumentError: an empty list. InvalidImageError / NoFaceError / FitError: a
            single image fails; NoFaceError: every frame of several fails.
        """
        if isinstance(src, (list, tuple)) and not (isinstance(src, tuple) and len(src) == 2 and isinstance(src[1], Face)):
            frames = list(src)
        else:
            frames = [src]
        if not frames:
            raise InvalidArgumentError(f"{what}: an empty list of images")
        if len(frames) == 1:
            done: List[Any] = [self.embed_one(frames[0], what)]
        else:
            done = self.embed_images(frames, names=[f"{what}, frame {i}" for i in range(len(frames))])
        used = [r for r in done if not isinstance(r, PifrError)]
        for i, r in enumerate(done):
            if isinstance(r, PifrError):
                log.warning("%s, frame %d: left out (%s: %s)", what, i, type(r).__name__, r)
        if not used:
            e = done[0]
            raise NoFaceError(f"{what}: none of its {len(frames)} frames gave a face ({type(e).__name__}: {e})")
        vec = pool_faces(np.stack([r.embedding for r in used]), [r.face.yaw for r in used])
        shift = max(r.threshold_shift for r in used) + (self.policy.event_threshold_shift if len(used) > 1 else 0.0)
        return Event(vec, tuple(used), shift)


# ---------------------------------------------------------------------- the public verbs


def embed(img: ImageLike, *, embedder: Optional[str] = None, face: Optional[Face] = None,
          frontalize: str = DEFAULT_FRONTALIZE, frontalizer: Optional[str] = None, yaw_threshold: Optional[float] = None,
          fusion_weight: Optional[float] = None, detector: Optional[str] = None,
          device: Any = None, bgr: bool = False) -> np.ndarray:
    """L2-normalised embedding of the largest face in ``img`` (or of ``face``).

    Args:
        img: anything :func:`pifr.load_image` accepts.
        embedder: registry name (see :func:`pifr.list_embedders`; default the library's default).
        face: skip detection and use this face (its yaw is estimated when it has none).
        frontalize: ``"auto"`` (default), ``"never"`` or ``"always"`` (see :func:`pifr.verify`).
        frontalizer: where views come from (:func:`pifr.views.parse_view`): ``None``/``"3d"`` the 3D
            render, ``"refined"`` / ``"refined:<file>"`` that render through a refiner, or a
            TP-GAN generator weights file.
        yaw_threshold, fusion_weight: the ``"auto"`` policy's parameters (see :func:`pifr.verify`).
        detector: detector name (default :data:`pifr.detection.DEFAULT_DETECTOR`).

    Returns:
        ``(dim,)`` float32 unit vector.

    Raises:
        NoFaceError: no face detected. FitError: the 3D fit refused a face the policy fuses.
        InvalidPolicyError: unknown ``frontalize`` mode, or threshold / weight out of range.
    """
    pipe = Pipeline(embedder, frontalize=frontalize, frontalizer=frontalizer, yaw_threshold=yaw_threshold,
                    fusion_weight=fusion_weight, detector=detector, device=device)
    arr = load_image(img, bgr=bgr)
    return pipe.embed_one(arr if face is None else (arr, face)).embedding


@dataclass(frozen=True)
class EmbedResult:
    """One item of :func:`embed_many`: the embedding and face, or the error that input raised."""

    index: int
    embedding: Optional[np.ndarray]
    face: Optional[Face]
    error: Optional[Exception] = None
    fused: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def embed_many(images: Sequence[ImageLike], *, embedder: Optional[str] = None, detector: Optional[str] = None,
               select: str = "largest", retry_min_score: Optional[float] = 0.5, frontalize: str = DEFAULT_FRONTALIZE,
               frontalizer: Optional[str] = None, device: Any = None, batch_size: int = 64,
               progress: bool = False) -> List[EmbedResult]:
    """Embed the chosen face of each image under the policy, as :func:`embed` would, ``batch_size``
    images at a time through every stage; a bad or faceless image yields an error item, never
    stops the batch. Results come in input order.

    Args:
        select: ``"largest"`` or ``"center"`` (nearest the image centre, for datasets such as LFW).
        retry_min_score: when nothing is found at the detector's default confidence, retry once at
            this lower cut-off (``None`` disables the retry).
        frontalize, frontalizer: the policy and view source, as for :func:`embed`.
        progress: show a tqdm progress bar.

    Raises:
        InvalidArgumentError: a single image instead of a sequence.
    """
    images = check_images(images)
    pipe = Pipeline(embedder, frontalize=frontalize, frontalizer=frontalizer, detector=detector, device=device,
                    batch_size=batch_size)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc=f"embed[{pipe.embedder.name}]", unit="img")
    out: List[EmbedResult] = []
    for k in range(0, len(images), batch_size):
        chunk = list(images[k:k + batch_size])
        done = pipe.embed_images(chunk, select=select, retry_min_score=retry_min_score,
                                 names=[f"item {k + j}" for j in range(len(chunk))])
        for j, r in enumerate(done):
            if isinstance(r, PifrError):
                log.warning("item %d: %s", k + j, r)
                out.append(EmbedResult(k + j, None, None, r))
            else:
                out.append(EmbedResult(k + j, r.embedding, r.face, None, r.fused))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return out
