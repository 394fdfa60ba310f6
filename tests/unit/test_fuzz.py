"""Fuzz-style robustness (seeded, bounded): malformed images, tensors and gallery files either work
or raise a PifrError — never anything else — and one bad item never costs a batch its good ones."""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import pifr
from pifr.errors import GalleryError, PifrError
from pifr.gallery import Gallery

from tests.conftest import EXAMPLES

SEED = 32
GOOD = EXAMPLES / "mitchell_frontal.png"


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.open(GOOD).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


def _png_claiming(w: int, h: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def malformed_images(rng: np.random.Generator, n: int = 80) -> list:
    """``n`` bad or odd inputs of every kind pifr accepts (plus some it does not)."""
    import torch

    jpg, png = _encoded("JPEG"), _encoded("PNG")
    out = []
    for k in range(n):
        kind = k % 16
        if kind == 0:
            out.append(bytes(rng.integers(0, 256, int(rng.integers(0, 4000)), dtype=np.uint8)))
        elif kind in (1, 2):
            src = jpg if kind == 1 else png
            out.append(src[: int(rng.integers(0, len(src)))])
        elif kind in (3, 4):
            src = bytearray(jpg if kind == 3 else png)
            for i in rng.integers(0, len(src), int(rng.integers(1, 20))):
                src[i] = int(rng.integers(0, 256))
            out.append(bytes(src))
        elif kind == 5:
            out.append(_png_claiming(int(rng.integers(1, 200_000)), int(rng.integers(1, 200_000))))
        elif kind == 6:
            shape = [int(x) for x in rng.integers(0, 5, int(rng.integers(1, 5)))]
            out.append(np.zeros(shape, np.uint8))
        elif kind == 7:
            dt = [np.int8, np.int32, np.int64, np.float16, np.complex64, np.object_, np.bool_, np.uint16][int(rng.integers(0, 8))]
            out.append(np.ones((32, 32, 3), dt))
        elif kind == 8:
            a = rng.random((40, 40, 3)).astype(np.float32)
            a[int(rng.integers(0, 40)), int(rng.integers(0, 40))] = [np.nan, np.inf, -np.inf, 7.0][int(rng.integers(0, 4))]
            out.append(a)
        elif kind == 9:
            out.append(np.zeros([int(x) for x in rng.integers(1, 24, int(rng.integers(4, 6)))], np.uint8))
        elif kind == 10:
            h, w = (16, int(rng.integers(2000, 60_000))) if rng.random() < 0.5 else (int(rng.integers(2000, 60_000)), 16)
            out.append(np.zeros((h, w, 3), np.uint8))
        elif kind == 11:
            dt = [torch.bfloat16, torch.float16, torch.int64, torch.complex64, torch.bool, torch.float64][int(rng.integers(0, 6))]
            shape = [(3, 40, 40), (40, 40, 3), (1, 3, 40, 40), (40,), (2, 40, 40)][int(rng.integers(0, 5))]
            out.append(torch.ones(shape).to(dt) if dt != torch.complex64 else torch.ones(shape, dtype=dt))
        elif kind == 12:
            t = torch.rand(3, 40, 40)
            t[0, 0, 0] = float("nan")
            out.append(t)
        elif kind == 13:
            cut = jpg[: int(rng.integers(len(jpg) // 4, len(jpg) - 1))]
            out.append(Image.open(io.BytesIO(cut)))  # lazily opened, truncated pixels
        elif kind == 14:
            out.append([None, "x", 3.5, {"a": 1}, (1, 2), object()][int(rng.integers(0, 6))])
        else:
            out.append(rng.integers(0, 256, (int(rng.integers(16, 64)), int(rng.integers(16, 64)), 3), dtype=np.uint8))
    return out


def test_every_malformed_image_is_a_pifr_error_or_an_image():
    rng = np.random.default_rng(SEED)
    kinds = {}
    for x in malformed_images(rng):
        try:
            a = pifr.load_image(x)
        except PifrError as e:
            kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
            continue
        assert a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8 and min(a.shape[:2]) >= 16
    assert kinds.get("InvalidImageError", 0) > 30 and kinds.get("ImageTooLargeError", 0) >= 1


def test_no_good_item_lost_in_a_batch():
    rng = np.random.default_rng(SEED + 1)
    bad = [x for x in malformed_images(rng, 32)][::3]  # 11 items, every kind of fault
    items = [GOOD] + bad + [EXAMPLES / "phoebe_frontal.png"]
    res = pifr.embed_many(items)
    assert len(res) == len(items) and res[0].ok and res[-1].ok
    assert all(isinstance(r.error, PifrError) for r in res if not r.ok)
    g = Gallery()
    rep = g.enroll("m", items[:-1])
    assert rep.added == 1 and all(i > 0 for i, _ in rep.failures)


@pytest.fixture(scope="module")
def gallery_file(tmp_path_factory):
    g = Gallery()
    rng = np.random.default_rng(SEED)
    for i in range(5):
        e = rng.normal(size=(2, g.dim)).astype(np.float32)
        g.add_embeddings(f"person {i}", e / np.linalg.norm(e, axis=1, keepdims=True))
    p = tmp_path_factory.mktemp("fuzz") / "g.gallery"
    g.save(p)
    return p


def _loads_or_gallery_error(path) -> None:
    try:
        g = Gallery.load(path)
    except GalleryError:
        return
    # A file that loads must still be a sound gallery.
    assert np.allclose(np.linalg.norm(g._emb, axis=1), 1, atol=1e-3) and len(g._labels) == g.templates


def test_damaged_gallery_files_raise_gallery_error(gallery_file, tmp_path):
    data = gallery_file.read_bytes()
    rng = np.random.default_rng(SEED)
    q = tmp_path / "damaged.gallery"
    for _ in range(25):  # truncated
        q.write_bytes(data[: int(rng.integers(0, len(data)))])
        _loads_or_gallery_error(q)
    for _ in range(60):  # flipped bytes
        b = bytearray(data)
        for i in rng.integers(0, len(b), int(rng.integers(1, 8))):
            b[i] ^= int(rng.integers(1, 256))
        q.write_bytes(bytes(b))
        _loads_or_gallery_error(q)
    with np.load(gallery_file, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["header"]))
    variants = [None, 3, "text", [], {}, {**header, "magic": "x"}, {**header, "schema": "2"},
                {**header, "dim": "128"}, {**header, "dim": 64}, {**header, "threshold": None},
                {**header, "threshold_mode": 1}, {**header, "embedder": None}, {**header, "embedder_sha256": 5}]
    variants += [{k: v for k, v in header.items() if k != key} for key in header]
    for h in variants:
        with open(q, "wb") as f:
            np.savez(f, **{**arrays, "header": np.array(json.dumps(h))})
        _loads_or_gallery_error(q)
    with open(q, "wb") as f:  # a header that is not even JSON
        np.savez(f, **{**arrays, "header": np.array("{not json")})
    with pytest.raises(GalleryError):
        Gallery.load(q)
