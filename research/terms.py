"""Loss terms that left the training objective but that the diagnostics here still measure with:
the cycle term through the 3D reference head (stages R, Y in LOG.md) and the embedding contrast
(stage Z). Copied from pifr/train/losses.py as of the commit LOG.md names; not a pifr feature."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_contrast(fake_emb: torch.Tensor, target_emb: torch.Tensor, input_emb: torch.Tensor) -> torch.Tensor:
    """Mean ``relu(cos(fake, input) − cos(fake, target))`` over ``(B, D)`` embeddings: the output
    must be nearer the person's frontal than the profile it was made from.

    Why: with dlib's embedding on CFP 351–400, another frontal photo of the person is nearer the
    gallery frontal than the profile in 95 % of cases, yet the outputs of every generator trained
    before it were nearer their input profile in 98.5–100 % (research/embedding_nearness.py). A
    copy scores ``1 − cos(input, target)`` here, as much as on the cosine term. Trained with it
    (LOG.md, stage Z), a width-0.25 generator fooled dlib instead of frontalizing."""
    return F.relu(F.cosine_similarity(fake_emb, input_emb, dim=1) - F.cosine_similarity(fake_emb, target_emb, dim=1)).mean()


def cycle_loss(fake: torch.Tensor, inp: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor,
               sizes=(64, 32), space: str = "pooled") -> torch.Tensor:
    """Mean L1 between the input and the output warped to the input's pose, on the input's face.

    ``fake``, ``inp``: ``(B, 3, S, S)`` in [-1, 1]; ``flow``: ``(B, S, S, 2)`` frontal-frame pixel
    (x, y) of each input pixel; ``valid``: ``(B, S, S)`` 1 on the face surface.
    ``space="pooled"``: colours compared after mask-weighted average pooling to each of ``sizes``
    (the reference head is not the person's: the warp is off by a few pixels, which must not
    reward blur), on cells at least half face. ``"gradient"``: horizontal and vertical
    differences of neighbouring pixels compared (structure rather than colour), where both
    neighbours are on the face — a flat output scores the input's own gradients, and a width-0.25
    generator trained with it collapsed to flat images (LOG.md, stage R3).
    """
    s = fake.shape[-1]
    grid = (flow.to(fake.dtype) + 0.5) / s * 2 - 1
    warped = F.grid_sample(fake, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = valid.to(fake.dtype).unsqueeze(1)
    if space == "gradient":
        dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
        dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
        mx, my = m[..., :, 1:] * m[..., :, :-1], m[..., 1:, :] * m[..., :-1, :]
        return ((dx(warped) - dx(inp)).abs() * mx).sum() / (mx.sum() * 3).clamp_min(1.0) + \
            ((dy(warped) - dy(inp)).abs() * my).sum() / (my.sum() * 3).clamp_min(1.0)
    if space != "pooled":
        raise ValueError(f"space must be 'pooled' or 'gradient', got {space!r}")
    terms = []
    for size in sizes:
        k = s // size
        pm = F.avg_pool2d(m, k)
        keep = (pm >= 0.5).to(fake.dtype)
        a = F.avg_pool2d(warped * m, k) / pm.clamp_min(1e-6)
        b = F.avg_pool2d(inp * m, k) / pm.clamp_min(1e-6)
        terms.append(((a - b).abs() * keep).sum() / (keep.sum() * 3).clamp_min(1.0))
    return torch.stack(terms).mean()
