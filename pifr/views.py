"""Where a face's other views come from, for recognition: a view source turns a face (and its 3D
fit) into crops of that face seen at other yaws, placed on an embedder's template.

* ``"3d"`` — :class:`Render3D`: the 3D fit (3DDFA_V2 + BFM) rendered at the asked yaws, the
  hidden side filled from the mirrored half (:mod:`pifr.rotation`). The default; ships.
* ``"refined"`` / ``"refined:<refiner.safetensors>"`` — :class:`RefinedRender3D`: that render
  through a learned refiner (:mod:`pifr.refinement`).
* a ``generator.safetensors`` path — :class:`GeneratorView`: a caller's TP-GAN generator
  (:mod:`pifr.generator`), frontal view only.

A view source is named by a string (``frontalizer=`` in the public API); :func:`parse_view`
reads the name, :func:`view_key` says what makes its views (for the policy's fingerprints)
without loading a network, :func:`get_view_source` builds it. Adding a view source: a class with
``view_crops`` here, its name in :func:`parse_view`, and a row for it in the rules file
(:mod:`pifr.policy`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .alignment import TPGAN_128, AlignmentTemplate, warp_to_template
from .errors import WeightsNotFoundError
from .types import Face

#: The weights every 3D render is made from: the fit regressor and the 3D face.
VIEW_FIT_WEIGHTS = ("tddfa_mb05", "face3d_bfm")
#: What a view source can be named: a built-in name, ``"refined:<file>"``, or a generator file.
ViewName = Optional[Union[str, Path]]


def parse_view(name: ViewName) -> Tuple[str, Optional[Union[str, Path]]]:
    """``(kind, file or None)`` of a view source name, kind one of :data:`pifr.policy.VIEW_SOURCES`:
    ``None`` / ``"3d"`` → ``("3d", None)``; ``"refined"`` → the registered refiner;
    ``"refined:<file>"`` → that refiner file; anything else → a TP-GAN generator file."""
    if name is None or str(name) == "3d":
        return "3d", None
    if str(name) == "refined":
        return "refined", None
    if isinstance(name, str) and name.startswith("refined:"):
        return "refined", name[len("refined:"):]
    return "tpgan", name


def _file_sha256(path: Union[str, Path]) -> str:
    from .weights import _sha_cached

    p = Path(path)
    # A regular file only: a folder is no weights and a FIFO would block the read.
    if not p.is_file():  # also False for a name with a NUL
        raise WeightsNotFoundError(f"{p}: no such weights file")
    try:
        st = p.stat()
        return _sha_cached(str(p.resolve()), st.st_size, st.st_mtime)  # hashed once per version of the file
    except OSError as e:  # gone or unreadable since: callers catch PifrError, not OSError
        raise WeightsNotFoundError(f"{p}: cannot read the weights file ({e.strerror or e})") from e


def view_key(name: ViewName) -> Dict[str, Any]:
    """What makes the views of source ``name``: its kind and the sha256 of every network behind
    it (the 3D fit's weights, the refiner's or generator's), found without loading a network.

    Raises:
        WeightsNotFoundError: ``"refined"`` with no refiner registered, or a named file that is
            missing, unreadable or not a regular file.
        UnknownModelError: the fit weights are not in the manifest.
    """
    from .weights import get_spec

    kind, path = parse_view(name)
    if kind == "3d":
        key: Dict[str, Any] = {"view": Render3D.name, "weights_sha256": None}
    elif path is not None:
        key = {"view": "tpgan" if kind == "tpgan" else f"{Render3D.name}+refiner", "weights_sha256": _file_sha256(path)}
    else:
        from .refinement import _registered

        specs = _registered()
        if not specs:
            raise WeightsNotFoundError("no refiner weights are registered in weights/manifest.json")
        key = {"view": f"{Render3D.name}+refiner", "weights_sha256": specs[0].sha256 or specs[0].name}
    if kind != "tpgan":  # a generator reads the photo itself; every render comes from the 3D fit
        key["fit_sha256"] = [get_spec(n).sha256 for n in VIEW_FIT_WEIGHTS]
    return key


def to_template(frontal: np.ndarray, template: AlignmentTemplate) -> np.ndarray:
    """Re-crop a frontal TP-GAN-crop image ``(128, 128, 3)`` onto another frontal template."""
    return warp_to_template(frontal, TPGAN_128, template)


def render_views(arr: np.ndarray, fit: Any, template: AlignmentTemplate, yaws: Sequence[float]) -> List[Any]:
    """``fit`` (a :class:`pifr.face3d.Fit3D` of a face in ``arr``) rendered at each of ``yaws``
    (degrees, signed) and 0° pitch into ``template``: :class:`pifr.rotation.Rotated` renders."""
    from .rotation import render_poses

    return render_poses(fit, arr, yaws, template=template)


def fit_one(arr: np.ndarray, face: Face, device: Any, name: str = "the image") -> Any:
    """The 3D fit of ``face`` in ``arr``. Raises FitError: the fit refused the face."""
    from .face3d import fit_faces

    return fit_faces(arr, [face], device=device, names=[name])[0]


class Render3D:
    """Views as 3D renders (no learned refiner): into the embedder's template directly."""

    name = "3d-render"
    #: Whether :meth:`view_crops` uses a 3D fit (the pipeline then makes it with the face's yaw).
    needs_fit = True

    def __init__(self, device: Any = None) -> None:
        self.device = device

    def view_crops(self, arr: np.ndarray, face: Face, template: AlignmentTemplate, yaws: Sequence[float],
                   fit: Any = None) -> np.ndarray:
        """``(len(yaws), S, S, 3)`` uint8 renders of ``face`` in ``arr`` at each yaw (degrees,
        signed) in ``template``; ``fit``: its 3D fit when already made (else made here)."""
        fit = fit if fit is not None else fit_one(arr, face, self.device)
        return np.stack([r.image for r in render_views(arr, fit, template, yaws)])

    def frontal_crop(self, arr: np.ndarray, face: Face, template: AlignmentTemplate, yaw: float = 0.0) -> np.ndarray:
        """``(S, S, 3)`` uint8: :meth:`view_crops` at one yaw."""
        return self.view_crops(arr, face, template, [yaw])[0]


class RefinedRender3D(Render3D):
    """Views as 3D renders turned photo-like by a learned refiner: rendered into the TP-GAN crop
    (the only crop the refiner was trained on), refined, moved onto the embedder's template.

    Raises (at construction):
        WeightsNotFoundError, WeightsFormatError: no usable refiner.
    """

    def __init__(self, weights: Optional[Union[str, Path]] = None, device: Any = None) -> None:
        from .refinement import get_refiner

        super().__init__(device)
        self.refiner = get_refiner(weights, device)
        self.name = f"{Render3D.name}+{self.refiner.name}"

    def view_crops(self, arr: np.ndarray, face: Face, template: AlignmentTemplate, yaws: Sequence[float],
                   fit: Any = None) -> np.ndarray:
        fit = fit if fit is not None else fit_one(arr, face, self.device)
        rs = render_views(arr, fit, TPGAN_128, yaws)
        return np.stack([to_template(im, template) for im in self.refiner.refine_rotated(rs)])


class GeneratorView:
    """The frontal view from a caller's TP-GAN generator (:class:`pifr.generator.Frontalizer`)."""

    needs_fit = False

    def __init__(self, weights: Union[str, Path], device: Any = None) -> None:
        from .generator import get_frontalizer

        self.generator = get_frontalizer(weights, device)
        self.name = self.generator.name

    def view_crops(self, arr: np.ndarray, face: Face, template: AlignmentTemplate, yaws: Sequence[float],
                   fit: Any = None) -> np.ndarray:
        """The frontal view, once per asked yaw (a generator only frontalizes)."""
        one = self.generator.frontal_crop(arr, face, template)
        return np.stack([one] * len(yaws))


def get_view_source(name: ViewName = None, device: Any = None) -> Any:
    """The view source named ``name`` (see :func:`parse_view`), built (its network loaded) once per
    name and device where it has one.

    Raises:
        WeightsNotFoundError, WeightsFormatError: no usable refiner or generator."""
    kind, path = parse_view(name)
    if kind == "3d":
        return Render3D(device)
    if kind == "refined":
        return RefinedRender3D(path, device)
    return GeneratorView(path, device)  # type: ignore[arg-type]
