"""Image input: one conversion layer from whatever the caller has to an RGB uint8 array.

Accepted inputs: a path (``str`` / ``os.PathLike``), encoded ``bytes``, a PIL image,
a numpy array (RGB unless ``bgr=True``; HxW grayscale, HxWx3, HxWx4; uint8, uint16 or
float in [0, 1]) or a torch tensor (CxHxW or HxWxC, same dtype rules).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import ImageTooLargeError, InvalidImageError

#: Largest image accepted, in pixels (about 8k x 8k). Guards against decompression bombs.
MAX_PIXELS = 64_000_000
#: Smallest side accepted, in pixels: nothing smaller can hold a detectable face.
MIN_SIDE = 16
#: Largest encoded file accepted, in bytes.
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Largest ratio of the long side to the short side. The detector scales the long side to 1024 px;
#: beyond 64:1 the short side would shrink below :data:`MIN_SIDE` (a 16×40000 strip reached OpenCV
#: as a zero-height resize and crashed it). Nothing that elongated holds a face worth detecting.
MAX_ASPECT = 64

ImageLike = Union[str, os.PathLike, bytes, np.ndarray, Any]


def _check_pixels(h: int, w: int, max_pixels: int, name: str = "image") -> None:
    if h * w > max_pixels:
        raise ImageTooLargeError(f"{name} has {w}x{h} = {w * h} pixels, more than pifr's limit of {max_pixels} "
                                 "(pifr.image.MAX_PIXELS; pass max_pixels= to raise it)")
    if min(h, w) < MIN_SIDE:
        raise InvalidImageError(f"{name} is {w}x{h}; both sides must be at least {MIN_SIDE} px")
    if max(h, w) > MAX_ASPECT * min(h, w):
        raise InvalidImageError(f"{name} is {w}x{h}: longer than {MAX_ASPECT}:1, no face can be found in it")


def _check_array_shape(shape: tuple, name: str) -> None:
    """An array image is HxW, HxWx1, HxWx3 or HxWx4; say the real shape otherwise (before its
    first two axes are read as height and width)."""
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise InvalidImageError(f"{name}: expected HxW, HxWx3 or HxWx4, got shape {tuple(shape)}")


def _decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise InvalidImageError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            # Check the header's size before decoding any pixels (bomb guard).
            _check_pixels(im.height, im.width, max_pixels, name)
            im.load()
            return _pil_to_rgb(_upright(im))
    except (ImageTooLargeError, InvalidImageError):
        raise
    except Image.DecompressionBombError as e:
        # PIL's own guard fires inside open() for headers far beyond its limit; quote pifr's.
        raise ImageTooLargeError(f"{name}: the image header declares more than pifr's limit of {max_pixels} pixels "
                                 "(pifr.image.MAX_PIXELS)") from e
    except UnidentifiedImageError as e:
        raise InvalidImageError(f"{name}: not a readable image format") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"{name}: corrupt or truncated image ({e})") from e


def _upright(im: Any) -> Any:
    """Apply the EXIF Orientation tag: phones store portraits sideways and set the tag; a face
    lying on its side is not detected or embedded as the person it is."""
    from PIL import ImageOps

    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - an unreadable EXIF block is treated as no rotation
        return im
    return ImageOps.exif_transpose(im) if orientation not in (None, 1) else im


def _pil_to_rgb(im: Any) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        return _array_to_rgb(a, bgr=False, name="16-bit image")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        return _array_to_rgb(np.asarray(im), bgr=False, name="RGBA image")
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _array_to_rgb(a: np.ndarray, *, bgr: bool, name: str) -> np.ndarray:
    if a.size == 0:
        raise InvalidImageError(f"{name}: empty array of shape {a.shape}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InvalidImageError(f"{name}: expected HxW, HxWx3 or HxWx4, got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InvalidImageError(f"{name}: contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise InvalidImageError(f"{name}: float images must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    else:
        raise InvalidImageError(f"{name}: unsupported dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 4:
        # Composite on black: transparent areas carry no face.
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = (a[..., :3].astype(np.float32) * alpha).round().astype(np.uint8)
    if bgr:
        a = a[..., ::-1]
    return np.array(a, dtype=np.uint8, order="C")  # always a fresh, writable copy


def input_label(item: Any, i: "int | None" = None) -> str:
    """How errors name an input: its path, else ``"image i"`` for item ``i`` of a list, else ``"the image"``."""
    if isinstance(item, (str, Path)):
        return str(item)
    return "the image" if i is None else f"image {i}"


def load_image(src: ImageLike, *, bgr: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Convert ``src`` to an RGB image.

    Args:
        src: path, encoded bytes, PIL image, numpy array or torch tensor (see module doc).
        bgr: the numpy/tensor input is in OpenCV's BGR order (ignored for files and PIL).
        max_pixels: reject images with more pixels than this.

    Returns:
        ``(H, W, 3)`` uint8 array, RGB, C-contiguous (a new array; the input is never modified).

    Raises:
        InvalidImageError: unreadable, corrupt, empty, too small or wrongly shaped input.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        FileNotFoundError-derived InvalidImageError: a path that does not exist.
    """
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not p.is_file():
            raise InvalidImageError(f"{p}: no such file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageTooLargeError(f"{p}: file is {size} bytes, more than {MAX_FILE_BYTES}")
        return _decode(p.read_bytes(), str(p), max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _decode(bytes(src), "<bytes>", max_pixels)
    if isinstance(src, np.ndarray):
        _check_array_shape(src.shape, "array")
        _check_pixels(src.shape[0], src.shape[1], max_pixels, "array")
        return _array_to_rgb(src, bgr=bgr, name="array")
    mod = type(src).__module__
    if mod.startswith("PIL."):
        _check_pixels(src.height, src.width, max_pixels, "PIL image")
        try:
            # A lazily opened file decodes here: a truncated one fails now, not at open().
            src.load()
            return _pil_to_rgb(_upright(src))
        except (OSError, SyntaxError, ValueError) as e:
            raise InvalidImageError(f"PIL image: corrupt or truncated ({e})") from e
    if mod.startswith("torch"):
        return _tensor_to_rgb(src, bgr=bgr, max_pixels=max_pixels)
    if src is None:
        raise InvalidImageError("image is None")
    if isinstance(src, (list, tuple)):
        raise InvalidImageError(f"a {type(src).__name__} is not an image (for several images use a batch function "
                                "such as pifr.embed_many)")
    raise InvalidImageError(f"unsupported image type {type(src).__name__}")


def _tensor_to_rgb(src: Any, *, bgr: bool, max_pixels: int) -> np.ndarray:
    """A torch tensor (CxHxW or HxWxC) → RGB uint8, through the numpy rules."""
    import torch

    if not isinstance(src, torch.Tensor):
        raise InvalidImageError(f"unsupported image type {type(src).__name__}")
    t = src.detach().cpu()
    if t.is_complex() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        raise InvalidImageError(f"tensor: unsupported dtype {t.dtype}")
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()  # numpy has no bfloat16: compare in float32, exactly representable
    if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[2] not in (1, 3, 4):
        t = t.permute(1, 2, 0)
    _check_array_shape(tuple(t.shape), "tensor")
    _check_pixels(int(t.shape[0]), int(t.shape[1]), max_pixels, "tensor")
    try:
        a = t.numpy()
    except (TypeError, RuntimeError) as e:
        raise InvalidImageError(f"tensor: cannot convert dtype {t.dtype} ({e})") from e
    return _array_to_rgb(a, bgr=bgr, name="tensor")
