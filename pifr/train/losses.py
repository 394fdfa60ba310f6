"""TP-GAN losses (Huang et al., ICCV 2017, eq. 1–8).

L = L_pixel + λ1·L_sym + λ2·L_adv + λ3·L_ip + λ4·L_tv + α·L_ce, paper weights
λ1 = 0.3, λ2 = 1e-3, λ3 = 3e-3, λ4 = 1e-4, α = 1e-3 (:class:`LossWeights`). All losses are
means (the paper's scale), so the weights are the paper's, not the official code's sums.
Images are ``(B, 3, H, W)`` in [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    pixel: float = 1.0
    sym: float = 0.3
    adv: float = 1e-3
    ip: float = 3e-3
    tv: float = 1e-4
    ce: float = 1e-3
    # Not in the paper (0 = paper): weight of 1 − cosine between the identity network's embeddings
    # of output and target. With identity-level pairs (CFP: target is another photo of the person)
    # the spatial maps of the L1 term describe a different pose and lighting; the embedding is the
    # part that should match, and in the L1 mean it is one level of six with a tiny scale.
    id_cos: float = 0.0
    # Not in the paper (0 = paper): weight of sin²(yaw) of the output, read by the frozen 3DDFA_V2
    # regressor (:class:`FrontalPose`): 0 for a frontal face, 1 for a full profile. The identity
    # terms on real profiles reward copying the profile (whose embedding is already close to the
    # person's frontals); a copy fails this term. A frozen network is easy to fool: at weight 1
    # the generator grew a bright blob that the regressor reads as frontal, and with pose_jitter
    # dark strokes instead (docs/tpgan.md, stages N and O).
    pose: float = 0.0
    # Not in the paper (0 = paper): the output, warped back to the input's pose through the 3D
    # reference head (:func:`pifr.geometry.frontal_flow`), must match the input on the face
    # pixels the input shows (:func:`cycle_loss`). Needs no frontal of the person, so it applies to
    # real profiles; a copy of a strongly turned profile (≥ 60°) fails it, being turned twice, and
    # the profile with its mirror image over it fails it badly. No network judges it, so there is
    # nothing to fool; in CPU runs it did not lead to frontals (docs/tpgan.md, stages R, R2): with
    # crops and flows from detected landmarks the warp misses by more than a copy's error, and on
    # real profiles it scores a copy far below the person's frontal (research/cycle_term_on_real.py).
    cycle: float = 0.0
    # Not in the paper (0 = paper): output-space domain adaptation. A second discriminator learns
    # to tell the generator's outputs for rendered profiles from its outputs for real profiles
    # (``TrainConfig.domain_pack``, used without targets); this term asks the real profiles'
    # outputs to pass for the renders'. Renders teach the rotation through the pixel terms, but a
    # generator trained on them alone fails on real profiles; the identity terms on real profiles
    # reward a copy (stages M, U), while a copy of a profile is what this discriminator spots.
    domain: float = 0.0
    # Not in the paper (0 = paper): the cycle term (:func:`cycle_loss`) on the domain pack's real
    # profiles (``TrainConfig.domain_pack``, no targets needed) rather than on the training pairs.
    # Meant to tie what the generator makes of a real profile to that profile's own face pixels,
    # where the domain term alone let identity and colour drift (stage X); it lost identity faster
    # (stages Y1–Y3), the term scoring a copy of a real profile below the person's frontal.
    domain_cycle: float = 0.0
    # Not in the paper (0 = paper): plain (pixel-space) symmetry of the domain pack's real
    # profiles' outputs. The cycle term sees only the half of the face a profile shows; alone it
    # left the other half dark (stage Y), which the Laplacian symmetry term cannot see.
    domain_sym: float = 0.0
    # Not in the paper (0 = paper): :func:`identity_contrast` — the output's embedding must be
    # nearer the target's than the input's. Needs the generator's inputs (``generator_loss(inputs=)``).
    # At 1 the generator fooled the identity network with one texture on every face; at 0.1–0.3
    # the copy stayed (docs/tpgan.md, stages Z–Z3).
    id_contrast: float = 0.0
    # Not in the paper (0 = paper): :func:`identity_nce` — each output's embedding must be nearer
    # its own person's target than the other people's targets in the batch (softmax over the
    # batch, temperature :data:`NCE_TEMPERATURE`). ``id_cos`` and ``ip`` only ask for nearness to
    # the target, and with dlib a single constant image is near every face (cosine 0.90 to the
    # CFP 351–400 frontals, against 0.916 for the raw profiles; docs/tpgan.md, stage SK); this term
    # charges such an image about log(batch) and is met only by outputs that tell people apart.
    # Needs the batch's identities (``generator_loss(id_labels=)``).
    id_nce: float = 0.0

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def pixel_loss(out: Mapping[str, torch.Tensor], target: torch.Tensor,
               target_patches: Optional[Mapping[str, torch.Tensor]] = None,
               sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean L1 at 128, 64 and 32 px (target area-downsampled) and on the local patch outputs.

    ``sample_weight`` (B,): each sample's L1 is scaled by it before the batch mean (0 leaves a
    sample out of the pixel term); None = all ones, the paper's loss."""

    def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if sample_weight is None:
            return F.l1_loss(a, b)
        return ((a - b).abs().flatten(1).mean(1) * sample_weight.to(a.dtype)).mean()

    terms = [l1(out["img128"], target)]
    for size in (64, 32):
        terms.append(l1(out[f"img{size}"], F.interpolate(target, size=size, mode="area")))
    if target_patches is not None and "patches" in out:
        for name, p in out["patches"].items():  # type: ignore[union-attr]
            terms.append(l1(p, target_patches[name]))
    return torch.stack(terms).mean()


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(img: torch.Tensor) -> torch.Tensor:
    k = _LAPLACE.to(img).view(1, 1, 3, 3).repeat(img.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), k, groups=img.shape[1])


def symmetry_loss(img: torch.Tensor, space: str = "laplacian") -> torch.Tensor:
    """L1 between the image and its horizontal mirror, in pixel space (``"plain"``) or in Laplacian
    space (``"laplacian"``: the paper's choice, robust to one-sided illumination; the Laplacian is
    mirror-invariant, so a symmetric face gives exactly zero)."""
    if space == "plain":
        return F.l1_loss(img, img.flip(3))
    if space == "laplacian":
        lap = laplacian(img)
        return F.l1_loss(lap, lap.flip(3))
    raise ValueError(f"space must be 'plain' or 'laplacian', got {space!r}")


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference of neighbouring pixels."""
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()


def d_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 0.9) -> torch.Tensor:
    """Discriminator loss: sigmoid cross-entropy with one-sided label smoothing (real target 0.9)."""
    return F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label)) + \
        F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def g_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial loss: make the discriminator call its output real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def identity_loss(features: Callable[[torch.Tensor], Mapping[str, torch.Tensor]], fake: torch.Tensor,
                  real: torch.Tensor) -> torch.Tensor:
    """Mean over feature levels of the L1 distance between a frozen face network's features of the
    generated and the true frontal (the paper uses Light-CNN's last pooling maps and feature vector)."""
    return identity_terms(features, fake, real)[0]


def identity_terms(features: Callable[..., Mapping[str, torch.Tensor]], fake: torch.Tensor,
                   real: torch.Tensor, inp: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                   view: Optional[RandomView] = None):
    """``(l1, cos, contrast, nce)``: the paper's mean L1 over feature levels, the mean
    ``1 − cosine`` of the embeddings, with ``inp`` (the generator's inputs)
    :func:`identity_contrast` and with ``labels`` (the batch's identities) :func:`identity_nce`
    (else None), from one pass of the frozen network over each image — through ``view`` when
    given (``features(img, view)``, the same view for all three)."""
    feats = features if view is None else (lambda t: features(t, view))
    with torch.no_grad():
        fr = feats(real)
        fi = feats(inp)["embedding"].float() if inp is not None else None
    ff = feats(fake)
    l1 = torch.stack([F.l1_loss(ff[k].float(), fr[k].float()) for k in fr]).mean()
    fe, re = ff["embedding"].float(), fr["embedding"].float()
    cos = 1 - F.cosine_similarity(fe, re, dim=1).mean()
    return (l1, cos, identity_contrast(fe, re, fi) if fi is not None else None,
            identity_nce(fe, re, labels) if labels is not None else None)


def identity_contrast(fake_emb: torch.Tensor, target_emb: torch.Tensor, input_emb: torch.Tensor) -> torch.Tensor:
    """Mean ``relu(cos(fake, input) − cos(fake, target))`` over ``(B, D)`` embeddings: the output
    must be nearer the person's frontal than the profile it was made from.

    Why: with dlib's embedding on CFP 351–400, another frontal photo of the person is nearer the
    gallery frontal than the profile in 95 % of cases, yet the outputs of every generator trained
    before it were nearer their input profile in 98.5–100 % (research/embedding_nearness.py). A
    copy scores ``1 − cos(input, target)`` here, as much as on the cosine term. Trained with it
    (docs/tpgan.md, stage Z), a width-0.25 generator fooled dlib instead of frontalizing."""
    return F.relu(F.cosine_similarity(fake_emb, input_emb, dim=1) - F.cosine_similarity(fake_emb, target_emb, dim=1)).mean()


#: Softmax temperature of :func:`identity_nce` (cosine units; dlib's same-person and impostor
#: cosines on CFP differ by ~0.1, 2 logits at 0.05). As in research/embedding_residual.py.
NCE_TEMPERATURE = 0.05


def identity_nce(fake_emb: torch.Tensor, target_emb: torch.Tensor, labels: torch.Tensor,
                 temperature: float = NCE_TEMPERATURE) -> torch.Tensor:
    """Supervised contrastive loss of ``(B, D)`` output embeddings against the batch's ``(B, D)``
    target embeddings: mean over outputs of ``−log(Σ_{same person} e^{cos/τ} / Σ_all e^{cos/τ})``.
    ``labels`` ``(B,)`` identities. 0 only when every output is infinitely nearer its own person's
    targets than anyone else's; an output equally near every target pays ``log(B / n_same)``.
    A batch of one person gives 0 (nothing to tell apart)."""
    sim = F.normalize(fake_emb, dim=1) @ F.normalize(target_emb, dim=1).T / temperature
    same = labels[:, None] == labels[None, :]
    return (torch.logsumexp(sim, 1) - torch.logsumexp(sim.masked_fill(~same, float("-inf")), 1)).mean()


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
    generator trained with it collapsed to flat images (docs/tpgan.md, stage R3).
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


class BEGANBalance:
    """Boundary-equilibrium state (Berthelot et al. 2017): k_{t+1} = k_t + λ_k (γ L(x) − L(G(z)))."""

    def __init__(self, gamma: float = 0.5, lambda_k: float = 1e-3) -> None:
        self.gamma, self.lambda_k, self.k = gamma, lambda_k, 0.0

    def d_loss(self, recon_err_real: torch.Tensor, recon_err_fake: torch.Tensor) -> torch.Tensor:
        return recon_err_real - self.k * recon_err_fake

    def update(self, recon_err_real: float, recon_err_fake: float) -> float:
        """Advance k and return the convergence measure M = L(x) + |γ L(x) − L(G(z))|."""
        self.k = min(max(self.k + self.lambda_k * (self.gamma * recon_err_real - recon_err_fake), 0.0), 1.0)
        return recon_err_real + abs(self.gamma * recon_err_real - recon_err_fake)


#: RetinaFace's median face box (x1, y1, x2, y2) on aligned TPGAN_128 frontal crops (60 CFP
#: 351–400 frontals); generator outputs are always in that frame, so the pose term crops 3DDFA's
#: region of interest from this fixed box instead of detecting.
TPGAN_128_FACE_BOX = (13.0, 1.0, 115.0, 122.0)


class FrontalPose(nn.Module):
    """sin(yaw) of TP-GAN crops by a frozen 3DDFA_V2 regressor (:mod:`pifr.models.tddfa`),
    differentiable: input ``(B, 3, 128, 128)`` RGB in [-1, 1]; output ``(B,)``, 0 for a frontal face,
    ±1 for a full profile (3DDFA's sign). The 120×120 crop is 3DDFA's ROI of
    :data:`TPGAN_128_FACE_BOX`, sampled with zeros outside the image as 3DDFA's own crop is.

    ``jitter`` > 0: each call moves and rescales each sample's crop at random by up to that
    fraction of its size, so that no one fixed pattern fools the regressor at every crop."""

    def __init__(self, net: nn.Module, box=TPGAN_128_FACE_BOX, size: int = 128, jitter: float = 0.0) -> None:
        super().__init__()
        self.jitter = jitter
        from ..models.tddfa import roi_from_bbox

        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        x1, y1, x2, y2 = roi_from_bbox(box)
        # Normalised output coordinate u ∈ [-1, 1] → input (align_corners=False): pixel edges 0 and size at ±1.
        theta = torch.tensor([[(x2 - x1) / size, 0.0, (x1 + x2) / size - 1],
                              [0.0, (y2 - y1) / size, (y1 + y2) / size - 1]])
        self.register_buffer("theta", theta)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        bgr = (img.flip(1).float() + 1) * 127.5
        theta = self.theta.expand(len(img), 2, 3)
        if self.jitter:
            r = (torch.rand(len(img), 3, device=img.device) * 2 - 1) * self.jitter
            scale = (1 + r[:, :1]).unsqueeze(2)  # (B, 1, 1)
            theta = torch.cat([theta[:, :, :2] * scale, theta[:, :, 2:] + r[:, 1:].unsqueeze(2) * 2 * theta[:, :1, :1]], 2)
        grid = F.affine_grid(theta, [len(img), 3, 120, 120], align_corners=False)
        cam = self.net(F.grid_sample(bgr, grid, padding_mode="zeros", align_corners=False))[:, :12].view(-1, 3, 4)
        r1, r2 = F.normalize(cam[:, 0, :3], dim=1), F.normalize(cam[:, 1, :3], dim=1)
        return r1[:, 1] * r2[:, 2] - r1[:, 2] * r2[:, 1]  # (r1 × r2)_x = sin(yaw), as pose_from_params


class IdentityFeatures(nn.Module):
    """A frozen face network seen from TP-GAN's 128 crop: warps the [-1, 1] TP-GAN crop onto the
    network's own alignment template (a fixed similarity between the two frontal templates),
    rescales to its input range and returns its feature dict (intermediate maps + ``embedding``).

    ``net`` must take ``(B, 3, S, S)`` RGB in [0, 255] and have a ``feature_maps`` method returning
    a dict of tensors with an ``"embedding"`` entry — as every pifr embedder network does.
    """

    def __init__(self, net: nn.Module, src_template, dst_template) -> None:
        super().__init__()
        import numpy as np

        from ..alignment import similarity_transform

        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.size = dst_template.size
        m = similarity_transform(dst_template.array, src_template.array)  # dst px → src px
        # affine_grid works in normalised coordinates [-1, 1] (align_corners=False).
        s_in, s_out = src_template.size, dst_template.size
        to_norm = np.array([[2 / s_in, 0, 1 / s_in - 1], [0, 2 / s_in, 1 / s_in - 1], [0, 0, 1]])
        from_norm = np.array([[s_out / 2, 0, s_out / 2 - 0.5], [0, s_out / 2, s_out / 2 - 0.5], [0, 0, 1]])
        theta = to_norm @ np.vstack([m, [0, 0, 1]]) @ from_norm
        self.register_buffer("theta", torch.tensor(theta[:2], dtype=torch.float32)[None])

    def forward(self, img: torch.Tensor, view: Optional["RandomView"] = None) -> Dict[str, torch.Tensor]:
        """``img`` ``(B, 3, 128, 128)`` in [-1, 1]; ``view``: a per-sample random view (training only)."""
        theta = self.theta.expand(img.shape[0], 2, 3)
        if view is not None:
            # The view acts in the network's own crop: output coords → jittered coords → TP-GAN crop.
            theta = theta @ torch.cat([view.affine, view.affine.new_tensor([0.0, 0.0, 1.0]).expand(len(img), 1, 3)], 1)
        grid = F.affine_grid(theta, [img.shape[0], 3, self.size, self.size], align_corners=False)
        x = F.grid_sample((img + 1) * 127.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if view is not None:
            x = (x * view.gain[:, :, None, None]).clamp(0, 255)
        return self.net.feature_maps(x)


class IdentityEnsemble(nn.Module):
    """Several frozen identity networks as one teacher (``identity_net="dlib_resnet+mobilefacenet"``).

    Returns every member's maps under ``"<name>.<map>"`` (its raw embedding included) and, as
    ``"embedding"``, the members' unit embeddings concatenated and scaled by ``1/√n``: a unit
    vector whose cosine to another is the mean of the members' cosines, so the cosine, contrast
    and NCE terms and validation's rank-1 need no change.

    Why: a generator taught by one network learns marks that network reads and others do not
    (taught by MobileFaceNet, its gain never reached dlib or a second MobileFaceNet); marks two
    unlike networks must both read are more likely the face."""

    def __init__(self, members: Dict[str, IdentityFeatures]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two identity networks")
        self.members = nn.ModuleDict(members)

    def forward(self, img: torch.Tensor, view: Optional["RandomView"] = None) -> Dict[str, torch.Tensor]:
        """``img`` ``(B, 3, 128, 128)`` in [-1, 1]; ``view`` as :meth:`IdentityFeatures.forward` (shared by all)."""
        out: Dict[str, torch.Tensor] = {}
        embs = []
        for name, net in self.members.items():
            f = net(img, view)
            out.update({f"{name}.{k}": v for k, v in f.items()})
            embs.append(F.normalize(f["embedding"].float(), dim=1))
        out["embedding"] = torch.cat(embs, 1) / math.sqrt(len(embs))
        return out


#: Ranges of :class:`RandomView` at amount 1: shift (fraction of the half-crop), relative
#: scale, rotation (radians), per-channel colour gain.
VIEW_SHIFT, VIEW_SCALE, VIEW_ROTATION, VIEW_GAIN = 0.08, 0.06, math.radians(6.0), 0.10


@dataclass(frozen=True)
class RandomView:
    """One small random similarity and colour gain per sample, through which the identity
    network sees an image (``IdentityFeatures(img, view)``). One draw serves every image of a
    step, so output, target and input of a pair are seen the same way and the feature-map L1
    still compares like with like.

    Why: a generator trained against one fixed view of one frozen network can satisfy it with
    marks tied to that view (seen through random views, one such generator's MobileFaceNet
    rank-1 fell 0.42 → 0.295, the raw profiles' only 0.555 → 0.53); marks that must survive
    random shifts, scales, turns and colour changes are more likely the face itself — the
    expectation-over-transformation argument of Athalye et al., "Synthesizing Robust Adversarial
    Examples" (ICML 2018), used the other way round.
    ``affine`` ``(B, 2, 3)`` in normalised crop coordinates; ``gain`` ``(B, 3)``."""

    affine: torch.Tensor
    gain: torch.Tensor

    @classmethod
    def draw(cls, b: int, amount: float, generator: torch.Generator, device: torch.device) -> "RandomView":
        """``b`` views; ``amount`` scales the ranges (VIEW_*), 1 = as documented there."""
        u = (torch.rand(b, 7, generator=generator) * 2 - 1) * amount
        scale = 1 + VIEW_SCALE * u[:, 0]
        ang = VIEW_ROTATION * u[:, 1]
        cos, sin = scale * torch.cos(ang), scale * torch.sin(ang)
        affine = torch.stack([torch.stack([cos, -sin, VIEW_SHIFT * u[:, 2]], 1),
                              torch.stack([sin, cos, VIEW_SHIFT * u[:, 3]], 1)], 1)
        return cls(affine.to(device), (1 + VIEW_GAIN * u[:, 4:7]).to(device))


@dataclass
class LossTerms:
    total: torch.Tensor
    # Unweighted terms as detached 0-d tensors: reading them as numbers waits for the GPU, so the
    # trainer does that only on the steps it logs.
    terms: Dict[str, torch.Tensor]


def generator_loss(out: Mapping[str, torch.Tensor], target: torch.Tensor, *, weights: LossWeights = LossWeights(),
                   target_patches: Optional[Mapping[str, torch.Tensor]] = None,
                   fake_logits: Optional[torch.Tensor] = None, began_fake_err: Optional[torch.Tensor] = None,
                   id_features: Optional[Callable] = None, id_labels: Optional[torch.Tensor] = None,
                   sym_space: str = "laplacian", pixel_weight: Optional[torch.Tensor] = None,
                   pose: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                   cycle: Optional[Sequence[torch.Tensor]] = None, cycle_space: str = "pooled",
                   inputs: Optional[torch.Tensor] = None, id_view: Optional[RandomView] = None) -> LossTerms:
    """The weighted TP-GAN generator objective; terms whose inputs are absent are skipped (but a
    weighted ``id_contrast`` without ``inputs`` or ``id_nce`` without ``id_labels`` raises
    ValueError rather than vanish). ``id_labels`` (B,): the batch's identities, for ``id_nce`` and,
    when the generator has an identity head (``"logits"`` in ``out``), ``ce``.
    ``pixel_weight`` (B,): per-sample scale of the pixel term (see :func:`pixel_loss`);
    ``pose``: a :class:`FrontalPose` for the ``pose`` term; ``cycle``: ``(input, flow, valid)``
    for the ``cycle`` term (:func:`cycle_loss`); ``inputs`` ``(B, 3, 128, 128)``: the generator's
    inputs, for the ``id_contrast`` term; ``id_view``: the identity network's random view
    (:class:`RandomView`) for this step, or None for its fixed one."""
    terms: Dict[str, torch.Tensor] = {"pixel": pixel_loss(out, target, target_patches, pixel_weight),
                                      "sym": symmetry_loss(out["img128"], sym_space),
                                      "tv": tv_loss(out["img128"])}
    if fake_logits is not None:
        terms["adv"] = g_adversarial_loss(fake_logits)
    elif began_fake_err is not None:
        terms["adv"] = began_fake_err
    if id_features is not None and (weights.ip or weights.id_cos or weights.id_contrast or weights.id_nce):
        if weights.id_contrast and inputs is None:
            raise ValueError("the id_contrast term needs the generator's inputs (inputs=)")
        if weights.id_nce and id_labels is None:
            raise ValueError("the id_nce term needs the batch's identities (id_labels=)")
        terms["ip"], id_cos, contrast, nce = identity_terms(
            id_features, out["img128"], target, inputs if weights.id_contrast else None,
            id_labels if weights.id_nce else None, id_view)
        if weights.id_cos:
            terms["id_cos"] = id_cos
        if contrast is not None:
            terms["id_contrast"] = contrast
        if nce is not None:
            terms["id_nce"] = nce
    if pose is not None and weights.pose:
        terms["pose"] = pose(out["img128"]).pow(2).mean()
    if cycle is not None and weights.cycle:
        terms["cycle"] = cycle_loss(out["img128"], *cycle, space=cycle_space)
    if id_labels is not None and "logits" in out:
        terms["ce"] = F.cross_entropy(out["logits"], id_labels)
    w = weights.to_dict()
    total = sum(w[k] * v for k, v in terms.items())
    return LossTerms(total, {k: v.detach() for k, v in terms.items()})
