"""pifr.refinement and the "refined" methods of rotate / frontalize / the CLI, with a tiny
random-init refiner saved to a temporary file (its outputs are noise; only the plumbing is tested)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import pifr
import pifr.weights
from pifr.errors import ShapeError, WeightsFormatError, WeightsNotFoundError
from pifr.refinement import RenderRefiner, get_refiner, refiner_available

from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def ref_file(tmp_path_factory):
    import torch

    from pifr.models.refiner import Refiner, RefinerConfig, save_refiner

    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("refiner") / "tiny_refiner.safetensors"
    save_refiner(Refiner(RefinerConfig(width=0.0625)), p, {"note": "random init, unit tests"})
    return p


@pytest.fixture
def no_registered_refiner(monkeypatch):
    """The manifest as if no refiner were registered (one will be, once trained)."""
    import pifr.refinement

    real = pifr.weights.list_weights
    monkeypatch.setattr(pifr.weights, "list_weights", lambda task=None: [s for s in real(task) if s.task != "refiner"])
    pifr.refinement._cached.cache_clear()  # the shipped refiner may be loaded already
    yield
    pifr.refinement._cached.cache_clear()


def _inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    masks = np.zeros((n, 128, 128), bool)
    masks[:, 20:110, 25:105] = True
    images[~masks] = 0
    landmarks = (rng.random((n, 68, 2)) * 80 + 24).astype(np.float32)
    return images, masks, landmarks


def _register_user_refiner(monkeypatch, folder, file):
    """Register a refiner named ``file`` (no checksum) in place of the shipped one, found through
    $PIFR_WEIGHTS_DIR=``folder`` like an installed refiner; returns its spec."""
    from pifr.weights import WeightSpec

    spec = WeightSpec(name="refiner", task="refiner", arch="refiner", file=file, sha256=None,
                      format="safetensors", location="user")
    real = pifr.weights.list_weights
    monkeypatch.setattr(pifr.weights, "list_weights",
                        lambda task=None: [s for s in real(task) if s.task != "refiner"] + ([spec] if task in (None, "refiner") else []))
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(folder))
    return spec


def test_refine_shapes_and_batches_agree_with_single_faces(ref_file):
    ref = get_refiner(ref_file, "cpu")
    assert isinstance(ref, RenderRefiner) and ref.name == "refiner:tiny_refiner.safetensors"
    assert ref.meta == {"note": "random init, unit tests"}
    assert get_refiner(ref_file, "cpu") is ref  # loaded once
    images, masks, landmarks = _inputs(5)
    out = ref.refine(images, masks, landmarks, batch_size=2)
    assert out.shape == (5, 128, 128, 3) and out.dtype == np.uint8
    one = np.stack([ref.refine(images[i:i + 1], masks[i:i + 1], landmarks[i:i + 1])[0] for i in range(5)])
    assert np.abs(out.astype(int) - one).max() <= 1
    assert ref.refine(images[:0], masks[:0], landmarks[:0]).shape == (0, 128, 128, 3)


def _write_refiner(path, seed):
    import torch

    from pifr.models.refiner import Refiner, RefinerConfig, save_refiner

    torch.manual_seed(seed)
    before = path.stat() if path.exists() else None
    save_refiner(Refiner(RefinerConfig(width=0.0625)), path, {"seed": seed})
    st = path.stat()
    if before is not None and (st.st_mtime_ns, st.st_size, st.st_ino) == (before.st_mtime_ns, before.st_size, before.st_ino):
        # Same size, and a coarse file-system clock can give two quick writes one mtime: a
        # rewrite minutes later always differs, so move the clock on as time would.
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def _torch_equal(a, b):
    import torch

    return bool(torch.equal(a, b))


def _first_weight(ref):
    return next(iter(ref.net.state_dict().values())).detach().clone()


def test_a_rewritten_refiner_file_is_read_again(tmp_path):
    p = tmp_path / "ft_refiner.safetensors"
    _write_refiner(p, 1)
    ref = get_refiner(p, "cpu")
    assert get_refiner(p, "cpu") is ref and get_refiner(str(p), "cpu") is ref  # unchanged file: loaded once
    w = _first_weight(ref)
    _write_refiner(p, 2)  # e.g. a training run saving its new best at the same path
    new = get_refiner(p, "cpu")
    assert new is not ref and new.meta == {"seed": 2} and not _torch_equal(_first_weight(new), w)
    assert get_refiner(p, "cpu") is new


def test_the_registered_refiner_is_read_again_when_its_file_changes(monkeypatch, tmp_path):
    import pifr.refinement

    # A file name of its own, found through $PIFR_WEIGHTS_DIR like an installed refiner.
    spec = _register_user_refiner(monkeypatch, tmp_path, "refiner_cache_test.safetensors")
    pifr.refinement._cached.cache_clear()
    try:
        p = tmp_path / spec.file
        _write_refiner(p, 3)
        ref = get_refiner(None, "cpu")
        assert ref.meta == {"seed": 3} and get_refiner(None, "cpu") is ref
        _write_refiner(p, 4)
        new = get_refiner(None, "cpu")
        assert new is not ref and new.meta == {"seed": 4} and get_refiner(None, "cpu") is new
    finally:
        pifr.refinement._cached.cache_clear()  # later tests must not see this registry's refiner


def test_refine_rejects_wrong_shapes_and_templates(ref_file):
    ref = get_refiner(ref_file, "cpu")
    images, masks, landmarks = _inputs(2)
    with pytest.raises(ShapeError):
        ref.refine(images[:, :64], masks, landmarks)
    with pytest.raises(ShapeError):
        ref.refine(images.astype(np.float32), masks, landmarks)
    with pytest.raises(ShapeError):
        ref.refine(images, masks, landmarks[:, :5])
    r = pifr.rotate(EXAMPLES / "night_turned.png", 0.0, method="3d", template="dlib_150")
    with pytest.raises(ShapeError, match="tpgan_128"):
        ref.refine_rotated([r])


def test_rotate_refined_keeps_the_render_and_says_so(ref_file):
    r = pifr.rotate(EXAMPLES / "mitchell_turned.png", 30, method="refined", weights=ref_file)
    assert isinstance(r, pifr.rotation.Rotated) and r.method == "refined" and r.template == "tpgan_128"
    assert r.image.shape == r.render.shape == (128, 128, 3) and r.image.dtype == r.render.dtype == np.uint8
    plain = pifr.rotate(EXAMPLES / "mitchell_turned.png", 30, method="3d")
    assert plain.method == "3d" and plain.render is None
    assert np.array_equal(r.render, plain.image) and np.array_equal(r.mask, plain.mask)
    assert not np.array_equal(r.image, r.render)
    assert r.to_dict()["method"] == "refined" and plain.to_dict()["method"] == "3d"
    # auto: refined as soon as weights are given
    assert pifr.rotate(EXAMPLES / "mitchell_turned.png", 30, weights=ref_file).method == "refined"


def test_rotate_refined_into_another_template_moves_everything_together(ref_file):
    r = pifr.rotate(EXAMPLES / "mitchell_turned.png", 0, method="refined", weights=ref_file, template="dlib_150")
    direct = pifr.rotate(EXAMPLES / "mitchell_turned.png", 0, method="3d", template="dlib_150")
    assert r.template == "dlib_150" and r.image.shape == r.render.shape == (150, 150, 3)
    assert r.mask.shape == r.visibility.shape == (150, 150) and r.mask.dtype == bool
    # The warped TP-GAN crop lands where a render straight into the template lands.
    assert np.abs(r.landmarks5 - direct.landmarks5).max() < 4
    iou = (r.mask & direct.mask).sum() / (r.mask | direct.mask).sum()
    assert iou > 0.85
    # The landmarks moved with the image: the mask covers the nose tip and eye centres.
    for x, y in r.landmarks5[:3]:
        assert r.mask[int(y), int(x)]


def test_rotate_refined_list_keeps_the_good_items(ref_file, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    blank = np.zeros((64, 64, 3), np.uint8)
    items = [EXAMPLES / "night_turned.png", bad, blank, EXAMPLES / "mitchell_turned.png"]
    out = pifr.rotate(items, 20, method="refined", weights=ref_file, batch_size=1)
    assert isinstance(out[1], pifr.InvalidImageError) and isinstance(out[2], pifr.NoFaceError)
    for k in (0, 3):
        assert out[k].method == "refined"
        assert np.abs(out[k].image.astype(int) - pifr.rotate(items[k], 20, method="refined", weights=ref_file).image).max() <= 1


def test_frontalize_refined(ref_file):
    f = pifr.frontalize(EXAMPLES / "mitchell_turned.png", method="refined", weights=ref_file)
    assert f.image.shape == (128, 128, 3) and f.image.dtype == np.uint8 and f.mask.shape == (128, 128)
    assert f.generator == "3d-render+refiner:tiny_refiner.safetensors" and abs(f.yaw) > 30
    out = pifr.frontalize([EXAMPLES / "mitchell_turned.png", b"junk"], method="refined", weights=ref_file)
    assert np.abs(out[0].image.astype(int) - f.image).max() <= 1 and isinstance(out[1], pifr.InvalidImageError)


def test_refined_frontal_view_for_the_policy(ref_file):
    from pifr.views import RefinedRender3D, Render3D, get_view_source as frontal_view

    emb = pifr.get_embedder("dlib_resnet")
    img = pifr.load_image(EXAMPLES / "mitchell_turned.png")
    view = frontal_view(f"refined:{ref_file}")
    assert isinstance(view, RefinedRender3D) and view.name.startswith("3d-render+refiner:")
    face = pifr.detect(img)[0]
    one = view.frontal_crop(img, face, emb.template)
    assert one.shape == (150, 150, 3)
    # A pooled rule's views: one fit, one refiner batch, each the same as asked alone.
    many = view.view_crops(img, face, emb.template, [0.0, 30.0])
    assert many.shape == (2, 150, 150, 3) and np.abs(many[0].astype(int) - one).max() <= 1
    assert np.abs(many[1].astype(int) - view.frontal_crop(img, face, emb.template, yaw=30.0)).max() <= 1
    assert np.abs(many[1].astype(int) - many[0]).mean() > 5
    assert isinstance(frontal_view(None), Render3D)  # the policy's default view is unchanged


def test_no_refiner_installed(ref_file, no_registered_refiner):
    assert refiner_available() is False
    with pytest.raises(WeightsNotFoundError):
        pifr.rotate(EXAMPLES / "night_turned.png", 30, method="refined")
    with pytest.raises(WeightsNotFoundError):
        pifr.frontalize([EXAMPLES / "night_turned.png"], method="refined")  # a list too: not one bad image
    with pytest.raises(WeightsNotFoundError):
        get_refiner(ref_file.parent / "absent.safetensors")
    # The defaults fall back to the 3D render.
    assert pifr.rotate(EXAMPLES / "night_turned.png", 30).method == "3d"
    assert pifr.frontalize(EXAMPLES / "night_turned.png").generator == "3d-render"


def test_refiner_available_needs_a_registered_spec_and_its_file(ref_file, monkeypatch, tmp_path):
    import shutil

    # A file name of its own: the shipped refiner.safetensors sits in weights/, a search location.
    _register_user_refiner(monkeypatch, tmp_path, "refiner_under_test.safetensors")
    assert refiner_available() is False  # registered, file absent
    shutil.copy(ref_file, tmp_path / "refiner_under_test.safetensors")
    assert refiner_available() is True
    from pifr.rotation import _resolve_method

    assert _resolve_method("auto", None) == "refined"


def test_bad_refiner_files_are_format_errors(ref_file, gen_file, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsFormatError, match="junk.safetensors"):
        get_refiner(junk, "cpu")
    with pytest.raises(WeightsFormatError, match="not a refiner"):  # a TP-GAN generator file
        get_refiner(gen_file, "cpu")
    # Tensors that do not fit the config the file names.
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(ref_file), "pt") as f:
        md, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    md = dict(md, config=json.dumps(dict(json.loads(md["config"]), width=0.125)))
    wrong = tmp_path / "wrong.safetensors"
    save_file(sd, str(wrong), metadata=md)
    with pytest.raises(WeightsFormatError, match="wrong.safetensors"):
        get_refiner(wrong, "cpu")
    with pytest.raises(pifr.UnknownModelError):
        pifr.rotate(EXAMPLES / "night_turned.png", 30, method="3d", weights=ref_file)
    with pytest.raises(pifr.UnknownModelError):
        pifr.rotate(EXAMPLES / "night_turned.png", 30, method="gan")


def test_cli_rotate_and_frontalize_refined(ref_file, tmp_path, capsys):
    from PIL import Image

    from pifr.cli import main

    out = tmp_path / "r.png"
    assert main(["rotate", str(EXAMPLES / "night_turned.png"), "--yaw", "30", "--method", "refined",
                 "--weights", str(ref_file), "-o", str(out)]) == 0
    im = np.asarray(Image.open(out))
    assert im.shape == (128, 128, 3)
    want = pifr.rotate(EXAMPLES / "night_turned.png", 30, method="refined", weights=ref_file).image
    assert np.abs(im.astype(int) - want).max() <= 1
    out_f = tmp_path / "f.png"
    assert main(["frontalize", str(EXAMPLES / "night_turned.png"), "--method", "refined", "--weights", str(ref_file),
                 "-o", str(out_f)]) == 0
    assert np.asarray(Image.open(out_f)).shape == (128, 128, 3)
