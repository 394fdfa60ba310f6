"""Photometric augmentation on real faces."""
from __future__ import annotations

import numpy as np
import torch

from pifr.train.augment import photometric
from pifr.train.data import Pack


def test_photometric_augmentation_moves_colours_together_and_disturbs_only_the_input(small_pack):
    pack = Pack.load(small_pack)
    faces = torch.stack([torch.from_numpy(np.array(pack.image(i))).permute(2, 0, 1).float() / 127.5 - 1 for i in range(8)])
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    x0, y0 = photometric(faces, faces, g(0), 0.0)
    assert x0 is faces and y0 is faces
    xa, ya = photometric(faces, faces, g(1))
    xb, yb = photometric(faces, faces, g(1))
    xc, _ = photometric(faces, faces, g(2))
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)
    assert xa.shape == faces.shape and xa.min() >= -1 and xa.max() <= 1
    # The shared part is a colour map, the same at every pixel: two identical halves stay identical
    # in the target; the side light makes them differ in the input.
    halves = torch.cat([faces[:, :, :, :64], faces[:, :, :, :64]], dim=3)
    xh, yh = photometric(halves, halves, g(3))
    assert torch.equal(yh[..., :64], yh[..., 64:])
    assert (xh[..., :64] - xh[..., 64:]).abs().mean() > 0.02
    # Blur and noise reach the input only: the target keeps its fine detail up to the contrast
    # change, so its high-frequency energy relative to the face's stays near 1 on average.
    hf = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean(dim=(1, 2, 3))  # noqa: E731
    xs, ys = photometric(faces, faces, g(4))
    assert (hf(xs) - hf(ys)).abs().mean() > 0.1 * hf(faces).mean()
    assert ((hf(ys) / hf(faces)).log().abs() < 0.4).all()
