"""Frontalization: a face at any yaw → the 128×128 frontal face.

``pifr.frontalize`` offers the 3D render (:mod:`pifr.rotation`; ships, works out of the box), that
render through a learned refiner (:mod:`pifr.refinement`), a caller's TP-GAN generator (Huang et
al., ICCV 2017; :mod:`pifr.generator`) and classical 3D frontalization (Hassner et al., CVPR
2015; :mod:`pifr.geometry`). Recognition does not go through here: its views come from
:mod:`pifr.views` under the policy of :mod:`pifr.policy`, assembled by :mod:`pifr.pipeline`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np

from .alignment import TPGAN_128
from .errors import UnknownModelError
from .image import ImageLike, input_label, load_image
from .types import Face

log = logging.getLogger("pifr")

#: The name of the 3D render in :attr:`Frontalized.generator`.
RENDER_3D = "3d-render"


@dataclass(frozen=True)
class Frontalized:
    """Result of :func:`frontalize`.

    Attributes:
        image: ``(128, 128, 3)`` uint8 RGB frontal face on the :data:`pifr.TPGAN_128` template.
        face: the input :class:`Face` (source-image pixels, with yaw).
        yaw: the input face's estimated yaw in degrees.
        generator: which weights or method produced it: ``"3d-render"`` (``method="3d"``),
            ``"3d-render+refiner:<file>"`` (``"refined"``), the generator's name (``"tpgan"``),
            ``"hassner2015-3d"``.
        mask: ``(128, 128)`` bool pixels covered by the 3D render (``"3d"``, ``"refined"``; ``None``
            otherwise).
    """

    image: np.ndarray
    face: Face
    yaw: float
    generator: str
    mask: Optional[np.ndarray] = None


#: What :func:`frontalize` can use: ``"3d"`` — the 3D render (no learned refiner; works out of the
#: box); ``"refined"`` — that render through a learned refiner (:mod:`pifr.refinement`; ``weights=``
#: or the registered one); ``"tpgan"`` — a TP-GAN generator (``weights=``; none ships yet); ``"hassner"`` — classical
#: 3D frontalization (Hassner et al., CVPR 2015), a baseline that needs the user-supplied
#: ``model3Ddlib.mat`` (``weights=``) and lowers recognition (docs/frontalization.md).
FRONTALIZE_METHODS = ("3d", "refined", "tpgan", "hassner")


def _render_front(img: ImageLike, face: Optional[Face], detector: Optional[str], device: Any, name: str) -> "tuple[Face, Any]":
    """image → (face with yaw, its :class:`pifr.rotation.Rotated` frontal render in the TP-GAN crop)."""
    from .detection import detect_one

    arr = load_image(img)
    face = face or detect_one(arr, detector=detector, device=device, purpose=" to frontalize")
    from .views import fit_one, render_views

    fit = fit_one(arr, face, device, name)
    r = render_views(arr, fit, TPGAN_128, [0.0])[0]
    if face.yaw is None:
        face = face.with_yaw(fit.yaw)
    return face, r


def _render_3d(img: ImageLike, face: Optional[Face], detector: Optional[str], device: Any, name: str) -> Frontalized:
    face, r = _render_front(img, face, detector, device, name)
    return Frontalized(image=r.image, face=face, yaw=float(face.yaw), generator=RENDER_3D, mask=r.mask)


def _frontalize_refined(img: Union[ImageLike, List[ImageLike]], face: Optional[Face], weights: Optional[Union[str, Path]],
                        detector: Optional[str], device: Any, batch_size: int
                        ) -> Union[Frontalized, List[Union[Frontalized, Exception]]]:
    from .refinement import get_refiner

    refiner = get_refiner(weights, device)  # before any image: a missing refiner is not one bad image
    generator = f"{RENDER_3D}+{refiner.name}"
    if not isinstance(img, list):
        f, r = _render_front(img, face, detector, device, "the image")
        return Frontalized(image=refiner.refine_rotated([r])[0], face=f, yaw=float(f.yaw), generator=generator, mask=r.mask)
    from .rotation import render_then_refine

    def refine(ready: List["tuple[Face, Any]"]) -> List[Frontalized]:
        images = refiner.refine_rotated([r for _, r in ready], max(1, batch_size))
        return [Frontalized(image=image, face=f, yaw=float(f.yaw), generator=generator, mask=r.mask)
                for (f, r), image in zip(ready, images)]

    return render_then_refine(img, lambda i, one: _render_front(one, None, detector, device, input_label(one, i)),
                              refine)  # type: ignore[return-value]


def frontalize(img: Union[ImageLike, List[ImageLike]], *, method: Optional[str] = None, face: Optional[Face] = None,
               weights: Optional[Union[str, Path]] = None, detector: Optional[str] = None,
               device: Any = None, batch_size: int = 32) -> Union[Frontalized, List[Union[Frontalized, Exception]]]:
    """Frontal view of the largest face in ``img`` (or of ``face``), in the 128×128 TP-GAN crop.

    Args:
        method: ``"3d"`` (the face fitted in 3D and rendered from the front, the hidden side
            filled from the visible half; :mod:`pifr.rotation`), ``"refined"`` (that render
            through a learned refiner, :mod:`pifr.refinement`: ``weights`` = a refiner file or the
            registered one), ``"tpgan"`` (a learned generator: ``weights`` or the installed one) or
            ``"hassner"`` (Hassner et al. 2015; ``weights`` = path of ``model3Ddlib.mat``). See
            :data:`FRONTALIZE_METHODS`. Default: ``"tpgan"`` when ``weights`` is given or a
            generator is installed, else ``"refined"`` when a refiner is installed, else ``"3d"``.
        batch_size: for a list, how many faces go through the generator (or refiner) in one forward pass.

    A list input returns a list with one :class:`Frontalized` or one exception per image (one
    bad image never stops the batch); faces are detected one image at a time and frontalized
    ``batch_size`` at a time.

    Raises:
        NoFaceError: no face found (single-image call).
        FitError: the 3D fit refused the face (``"3d"``; too small or turned too far up/down).
        WeightsNotFoundError: ``"tpgan"`` / ``"refined"`` with no generator / refiner installed
            and none given (also for a list: that is not one bad image).
        WeightsFormatError: ``weights`` is not a file of the method's kind.
    """
    from .rotation import render_then_refine

    if method is None:
        from .refinement import refiner_available
        from .weights import list_weights

        method = ("tpgan" if weights is not None or list_weights("frontalizer") else
                  "refined" if refiner_available() else "3d")
        log.debug("frontalize: method None -> %s", method)
    if method not in FRONTALIZE_METHODS:
        raise UnknownModelError(f"method must be one of {FRONTALIZE_METHODS}, got {method!r}")
    if method == "3d":
        if weights is not None:
            raise UnknownModelError('method="3d" takes no weights (its 3D face ships with pifr); a generator file needs method="tpgan"')
        if not isinstance(img, list):
            return _render_3d(img, face, detector, device, "the image")
        return render_then_refine(img, lambda i, one: _render_3d(one, None, detector, device, input_label(one, i)), list)
    if method == "refined":
        return _frontalize_refined(img, face, weights, detector, device, batch_size)
    if method == "hassner":
        from .geometry import frontalize_3d

        def one_3d(im: ImageLike, f: Optional[Face]) -> Frontalized:
            r = frontalize_3d(im, face=f, model_path=None if weights is None else str(weights), detector=detector)
            return Frontalized(image=r.image, face=r.face if r.face.yaw is not None else r.face.with_yaw(r.yaw),
                               yaw=float(r.face.yaw if r.face.yaw is not None else r.yaw), generator="hassner2015-3d")

        if not isinstance(img, list):
            return one_3d(img, face)
        return render_then_refine(img, lambda i, one: one_3d(one, None), list)
    from .generator import _tpgan_input, get_frontalizer

    fr = get_frontalizer(weights, device)
    if not isinstance(img, list):
        face, crop, lm = _tpgan_input(img, face, detector, device)
        image = fr.frontalize_crops(crop[None], lm[None], [face.yaw])[0]
        return Frontalized(image=image, face=face, yaw=float(face.yaw), generator=fr.name)

    def generate(ready: List["tuple[Face, np.ndarray, np.ndarray]"]) -> List[Frontalized]:
        out, step = [], max(1, batch_size)
        for k in range(0, len(ready), step):
            chunk = ready[k:k + step]
            images = fr.frontalize_crops(np.stack([c for _, c, _ in chunk]), np.stack([l for _, _, l in chunk]),
                                         [f.yaw for f, _, _ in chunk])
            out += [Frontalized(image=im, face=f, yaw=float(f.yaw), generator=fr.name) for (f, _, _), im in zip(chunk, images)]
        return out

    return render_then_refine(img, lambda i, one: _tpgan_input(one, None, detector, device), generate)
