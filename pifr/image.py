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

ImageLike = Union[str, os.PathLike, bytes, np.ndarray, Any]


def _check_pixels(h: int, w: int, max_pixels: int) -> None:
    if h * w > max_pixels:
        raise ImageTooLargeError(f"image has {w}x{h} = {w * h} pixels, more than the limit {max_pixels}")
    if min(h, w) < MIN_SIDE:
        raise InvalidImageError(f"image is {w}x{h}; both sides must be at least {MIN_SIDE} px")


def _decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise InvalidImageError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            # Check the header's size before decoding any pixels (bomb guard).
            _check_pixels(im.height, im.width, max_pixels)
            im.load()
            return _pil_to_rgb(im)
    except (ImageTooLargeError, InvalidImageError):
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{name}: {e}") from e
    except UnidentifiedImageError as e:
        raise InvalidImageError(f"{name}: not a readable image format") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"{name}: corrupt or truncated image ({e})") from e


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
        if src.ndim >= 2:
            _check_pixels(src.shape[0], src.shape[1], max_pixels)
        return _array_to_rgb(src, bgr=bgr, name="array")
    mod = type(src).__module__
    if mod.startswith("PIL."):
        _check_pixels(src.height, src.width, max_pixels)
        return _pil_to_rgb(src)
    if mod.startswith("torch"):
        t = src.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[2] not in (1, 3, 4):
            t = t.permute(1, 2, 0)
        a = t.numpy()
        if a.ndim >= 2:
            _check_pixels(a.shape[0], a.shape[1], max_pixels)
        return _array_to_rgb(a, bgr=bgr, name="tensor")
    if src is None:
        raise InvalidImageError("image is None")
    raise InvalidImageError(f"unsupported image type {type(src).__name__}")
