"""frontalize() (3D render, refiner, a tiny random-init TP-GAN generator) and a generator as the view
source of verify and embed."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import save_file

import pifr
from pifr.generator import Frontalizer
from pifr.views import to_template
from pifr.models.tpgan import Generator

from tests.conftest import EXAMPLES


def test_frontalize_one_and_many(gen_file, tmp_path):
    r = pifr.frontalize(EXAMPLES / "mitchell_turned.png", weights=gen_file)
    assert isinstance(r, pifr.Frontalized)
    assert r.image.shape == (128, 128, 3) and r.image.dtype == np.uint8
    assert r.yaw > 25 and r.face.yaw == r.yaw
    again = pifr.frontalize(EXAMPLES / "mitchell_turned.png", weights=gen_file)
    assert np.array_equal(again.image, r.image)  # deterministic (zero noise at inference)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    night = pifr.frontalize(EXAMPLES / "night_turned.png", weights=gen_file)
    turned = np.ascontiguousarray(pifr.load_image(EXAMPLES / "mitchell_turned.png")[:, ::-1])  # faces the other way
    single = pifr.frontalize(turned, weights=gen_file)
    assert night.yaw * single.yaw < 0  # so the batch below mixes mirrored and plain crops
    out = pifr.frontalize([EXAMPLES / "night_turned.png", bad, np.zeros((64, 64, 3), np.uint8), turned],
                          weights=gen_file, batch_size=2)
    assert isinstance(out[1], pifr.InvalidImageError) and isinstance(out[2], pifr.NoFaceError)
    # The two good faces went through the generator in one batch, and match the one-at-a-time
    # results (up to a rounding step: batched convolutions may sum in another order).
    for got, want in ((out[0], night), (out[3], single)):
        assert isinstance(got, pifr.Frontalized) and got.yaw == want.yaw
        assert np.abs(got.image.astype(int) - want.image.astype(int)).max() <= 1


def test_mirrored_input_gives_mirrored_output(gen_file):
    fr = Frontalizer(gen_file)
    crop = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    lm = np.array([[44, 41], [86, 41], [64, 65], [48, 89], [82, 89]], np.float32)
    a = fr.frontalize_crops(crop[None], lm[None], [60.0])[0]
    from pifr.alignment import mirror

    mc, ml = mirror(crop, lm)
    b = fr.frontalize_crops(mc[None], ml[None], [-60.0])[0]
    assert np.array_equal(a, b[:, ::-1])


def test_policies_in_verify_and_embed(gen_file):
    r = pifr.verify(EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png", frontalize="auto",
                    frontalizer=gen_file, yaw_threshold=30)
    assert r.frontalized == (False, True)
    r = pifr.verify(EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png", frontalize="always", frontalizer=gen_file,
                    threshold=0.5)
    assert r.frontalized == (True, True)
    v = pifr.embed(EXAMPLES / "night_turned.png", frontalize="always", frontalizer=str(gen_file))
    assert v.shape == (128,) and abs(np.linalg.norm(v) - 1) < 1e-4


def test_to_template_keeps_a_frontal_face_aligned():
    from pifr.alignment import DLIB_150, TPGAN_128, transform_points, similarity_transform

    m = similarity_transform(TPGAN_128.array, DLIB_150.array)
    assert np.abs(transform_points(TPGAN_128.array, m) - DLIB_150.array).max() < 3.0
    assert to_template(np.zeros((128, 128, 3), np.uint8), DLIB_150).shape == (150, 150, 3)


def test_bad_generator_files(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(pifr.WeightsFormatError):
        Frontalizer(p)
    g = Generator(width=0.125)
    q = tmp_path / "wrong_width.safetensors"
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(q), metadata={"config": json.dumps({"width": 0.25})})
    with pytest.raises(pifr.WeightsFormatError):
        Frontalizer(q)
    with pytest.raises(pifr.WeightsNotFoundError):
        Frontalizer(tmp_path / "absent.safetensors")


def test_every_entry_point_refuses_a_near_miss_mode_before_loading_anything(monkeypatch):
    """``"Auto"`` once fell through to raw embeddings in Gallery; verify/embed said "model not
    registered". Now all of them raise the same typed error, before any network is built."""
    import pifr.embedders as E

    monkeypatch.setattr(E, "get_embedder", lambda *a, **k: pytest.fail("a network was loaded"))
    for call in (lambda: pifr.Gallery(frontalize="Auto"), lambda: pifr.verify(EXAMPLES / "night_frontal.png",
                 EXAMPLES / "night_turned.png", frontalize="Auto"), lambda: pifr.embed(EXAMPLES / "night_turned.png",
                 frontalize="Auto"), lambda: pifr.Gallery(frontalize="auto", yaw_threshold=120),
                 lambda: pifr.verify(EXAMPLES / "night_frontal.png", EXAMPLES / "night_turned.png", fusion_weight=2)):
        with pytest.raises(pifr.InvalidPolicyError):
            call()


def test_no_registered_frontalizer_is_a_clear_error_and_a_bad_checksum_surfaces(tmp_path, monkeypatch):
    import pifr.weights as W

    monkeypatch.setattr(W, "list_weights", lambda task=None: [])
    with pytest.raises(pifr.WeightsNotFoundError, match="pass weights="):
        Frontalizer()
    f = tmp_path / "shipped_generator.safetensors"
    f.write_bytes(b"not the registered file")
    spec = W.WeightSpec(name="tpgan_test", task="frontalizer", arch="TP-GAN", file=f.name, sha256="0" * 64,
                        format="safetensors", location="shipped")
    monkeypatch.setattr(W, "list_weights", lambda task=None: [spec] if task == "frontalizer" else [])
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(pifr.WeightsChecksumError):
        Frontalizer()


def test_frontalize_works_out_of_the_box_with_the_shipped_refiner():
    """The refiner ships, so the default method refines the 3D render: the whole crop filled (the
    render leaves the surround black), a face the yaw estimator reads as frontal."""
    f = pifr.frontalize(EXAMPLES / "mitchell_turned.png")
    assert f.generator == "3d-render+refiner:refiner.safetensors" and f.image.shape == (128, 128, 3)
    assert f.image[~f.mask].mean() > 20
    assert abs(pifr.estimate_yaw(np.ascontiguousarray(np.pad(f.image, ((40, 40), (40, 40), (0, 0)), mode="edge")))) < 10


def test_frontalize_3d_render(tmp_path):
    """method="3d": a frontal face in the TP-GAN crop that the yaw estimator reads as frontal, a
    mask, and one result or error per list item."""
    f = pifr.frontalize(EXAMPLES / "mitchell_turned.png", method="3d")
    assert f.generator == "3d-render" and f.image.shape == (128, 128, 3) and f.mask.mean() > 0.4
    assert abs(f.yaw - 52) < 8
    assert abs(pifr.estimate_yaw(np.ascontiguousarray(np.pad(f.image, ((40, 40), (40, 40), (0, 0)))))) < 10
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"nope")
    out = pifr.frontalize([EXAMPLES / "night_turned.png", bad], method="3d")
    assert out[0].generator == "3d-render" and isinstance(out[1], pifr.InvalidImageError)
    with pytest.raises(pifr.UnknownModelError, match="no weights"):
        pifr.frontalize(EXAMPLES / "night_turned.png", method="3d", weights="model3Ddlib.mat")
