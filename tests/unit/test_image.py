"""Image input: every accepted type converts to RGB uint8; each kind of bad input raises its typed error."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import pifr
from pifr.errors import ImageTooLargeError, InvalidImageError, PifrError
from pifr.image import load_image

from tests.conftest import EXAMPLES


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w×h pixels, with a tiny (invalid) body: a decompression-bomb shape."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


@pytest.fixture
def face_png() -> bytes:
    return (EXAMPLES / "mitchell_frontal.png").read_bytes()


BAD_INPUTS = {
    "missing path": lambda tmp: tmp / "nope.jpg",
    "empty file": lambda tmp: (tmp / "e.jpg").write_bytes(b"") or tmp / "e.jpg",
    "truncated jpeg": lambda tmp: (EXAMPLES / "mitchell_frontal.png").read_bytes()[:300],
    "random bytes": lambda tmp: bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
    "text file": lambda tmp: (tmp / "t.jpg").write_text("not an image") or tmp / "t.jpg",
    "tiny image": lambda tmp: np.zeros((8, 8, 3), np.uint8),
    "1-d array": lambda tmp: np.zeros(100, np.uint8),
    "2-channel array": lambda tmp: np.zeros((32, 32, 2), np.uint8),
    "float out of range": lambda tmp: np.full((32, 32, 3), 3.0, np.float32),
    "float with NaN": lambda tmp: np.full((32, 32, 3), np.nan, np.float32),
    "int64 array": lambda tmp: np.zeros((32, 32, 3), np.int64),
    "empty array": lambda tmp: np.zeros((0, 0, 3), np.uint8),
    "None": lambda tmp: None,
    "list": lambda tmp: [[0, 1], [2, 3]],
}


def test_path_bytes_pil_numpy_tensor_agree(face_png):
    import torch

    a = load_image(EXAMPLES / "mitchell_frontal.png")
    assert a.shape == (120, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(load_image(face_png), a)
    assert np.array_equal(load_image(Image.open(io.BytesIO(face_png))), a)
    assert np.array_equal(load_image(a), a)
    assert np.array_equal(load_image(torch.from_numpy(a.copy()).permute(2, 0, 1)), a)
    assert np.array_equal(load_image(a.astype(np.float32) / 255.0), a)


def test_bgr_is_flipped_only_when_asked():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    assert load_image(rgb)[0, 0, 0] == 200
    assert load_image(rgb, bgr=True)[0, 0, 2] == 200


def test_gray_rgba_16bit_converted():
    g = np.full((40, 40), 77, np.uint8)
    assert np.all(load_image(g) == 77)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 100
    rgba[..., 3] = 255
    rgba[:20, :, 3] = 0  # transparent half composites to black
    out = load_image(rgba)
    assert out.shape == (40, 40, 3) and out[30, 0, 0] == 100 and out[0, 0, 0] == 0
    g16 = np.full((40, 40), 65535, np.uint16)
    assert np.all(load_image(g16) == 255)
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(buf, format="PNG")
    assert load_image(buf.getvalue()).dtype == np.uint8


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_raises_typed_error(kind, tmp_path):
    with pytest.raises(InvalidImageError) as e:
        load_image(BAD_INPUTS[kind](tmp_path))
    assert isinstance(e.value, PifrError) and isinstance(e.value, ValueError)


def test_decompression_bomb_rejected_before_decoding():
    with pytest.raises(ImageTooLargeError):
        load_image(_png_header_only(50_000, 50_000))


def test_huge_array_rejected():
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=5000)


def test_input_never_modified():
    a = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    before = a.copy()
    for bgr in (False, True):
        out = load_image(a, bgr=bgr)
        out[...] = 0
        assert np.array_equal(a, before)


def test_public_errors_share_one_base():
    for name in ("InvalidImageError", "ImageTooLargeError", "NoFaceError", "WeightsNotFoundError",
                 "WeightsChecksumError", "WeightsFormatError", "UnknownModelError", "ShapeError", "GalleryError",
                 "InvalidPolicyError", "TrainingError"):
        assert issubclass(getattr(pifr, name), pifr.PifrError)
