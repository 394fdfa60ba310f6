"""research/fit_tune.py: the differentiable landmarks agree with the 3D fit, mirrored crops keep their
marks on the pixels they mark, and a few steps pull the fit onto marks it missed."""
import numpy as np
import pytest
import torch

from pifr.face3d import fit_params
from research.fit_tune import CROP, CropLandmarks, FiducialSet, FitConfig, FitTrainer, crops


class _Always:
    """A generator stand-in: always mirrors, never jitters."""

    def random(self):
        return 0.0

    def uniform(self, lo, hi):
        return 0.0


def _params(seed=0):
    from pifr.pose import pose_network

    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (2, 3, CROP, CROP)).astype(np.float32))
    with torch.inference_mode():
        return pose_network()(x)


def test_crop_landmarks_match_the_fit_in_the_photo():
    params = _params()
    roi = (40.0, 30.0, 190.0, 180.0)
    crop_pts = CropLandmarks()(params)[..., :2].numpy()
    s = (roi[2] - roi[0]) / CROP
    for p, c in zip(params.numpy().astype(np.float64), crop_pts):
        photo = fit_params(p, roi, (240, 240)).landmarks68()
        np.testing.assert_allclose(c * s + [roi[0], roi[1]], photo, atol=1e-3)


def test_mirrored_crop_keeps_each_mark_on_its_pixel():
    img = np.zeros((200, 160, 3), np.uint8)
    target = np.full((68, 2), np.nan)
    target[36] = (50.0, 80.0)  # the subject's right eye corner, on the image's left
    img[78:83, 48:53] = 255
    x, t = crops([img], np.array([[20.0, 40.0, 140.0, 160.0]]), target[None], _Always())
    # Mirrored: the mark moved to the other eye's index, at the bright spot's new place.
    assert np.isnan(t[0, 36]).all() and np.isfinite(t[0, 45]).all()
    u, v = np.round(t[0, 45]).astype(int)
    assert x[0, v, u].max() == 255 and x[0, v, 120 - 1 - u].max() < 255


def _toy_set(n=4):
    """Photos whose marks sit 4 px right of where the original network puts nose and eye."""
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 255, (150, 150, 3)).astype(np.uint8) for _ in range(n)]
    roi = np.tile([[15.0, 15.0, 135.0, 135.0]], (n, 1))
    data = FiducialSet(imgs, roi, np.full((n, 68, 2), np.nan), np.array([1, 1, 2, 2]), np.array([True, False, True, False]),
                       np.array(["a", "b", "c", "d"]))
    x, _ = crops(imgs, roi, data.target)
    from pifr.pose import pose_network

    with torch.inference_mode():
        pts = CropLandmarks()(pose_network()(torch.from_numpy(x).permute(0, 3, 1, 2).float()))[..., :2].numpy()
    for k in (30, 36):
        data.target[:, k] = pts[:, k] + [4.0, 0.0]  # crop px = photo px here (ROI side 120)
    return data


def test_a_few_steps_pull_the_fit_onto_the_marks(tmp_path):
    torch.manual_seed(0)
    data = _toy_set()
    cfg = FitConfig(steps=25, batch=4, lr=3e-4, jitter=0.0, train_ids=(1, 2), tune_ids=(1, 2), val_every=25, threads=1)
    tr = FitTrainer(cfg, tmp_path, data)
    before = tr.errors(tr.net, np.arange(4)).mean()
    first = [tr.train_step()["fid_px"] for _ in range(3)]
    for _ in range(22):
        last = tr.train_step()["fid_px"]
    after = tr.errors(tr.net, np.arange(4)).mean()
    assert last < 0.6 * np.mean(first) and after < 0.7 * before, (first, last, before, after)


def test_a_run_resumes_where_it_stopped(tmp_path):
    data = _toy_set()
    cfg = FitConfig(steps=4, batch=2, jitter=0.0, train_ids=(1, 2), tune_ids=(1, 2), val_every=2, threads=1)
    a = FitTrainer(cfg, tmp_path / "a", data)
    a.run_steps()
    b = FitTrainer(cfg, tmp_path / "b", data)
    b.train_step(), b.train_step()
    b.save()  # as an interrupted run leaves it
    b2 = FitTrainer(cfg, tmp_path / "b", data)
    b2.run_steps()
    assert b2.step == 4
    for (k, va), vb in zip(a.net.state_dict().items(), b2.net.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
    assert (tmp_path / "a" / "best.safetensors").is_file()


def test_no_training_identities_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no photos"):
        FitTrainer(FitConfig(train_ids=(5, 9)), tmp_path, _toy_set())
