"""Loss terms on real faces: the pose term, random views, identity ensembles, the fp16 dlib copy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pifr.train import losses as L
from pifr.train.data import Pack, PairDataset
from pifr.train.config import TrainConfig, as_floats
from pifr.train.loop import Trainer


def _cfg(pack: Path, out: Path, **kw) -> TrainConfig:
    base = dict(pack=str(pack), out=str(out), train_identities="1-3", width=0.125, batch=4, steps=4, identity_net="none",
                adversarial="patch", sample_every=0, ckpt_every=0, val_every=0, log_every=1, frontal_inputs=False, resume=False)
    base.update(kw)
    return TrainConfig(**base)


def _first_frontal_of_each_person(pack_path: Path) -> torch.Tensor:
    """``(P, 3, 128, 128)`` in [-1, 1]: each identity's first frontal crop in the pack, in identity order."""
    pack = Pack.load(pack_path)
    idx = [int(np.flatnonzero(pack.frontal & (pack.identity == i))[0]) for i in np.unique(pack.identity)]
    return torch.stack([torch.from_numpy(pack.image(i).copy()).permute(2, 0, 1).float() / 127.5 - 1 for i in idx])


def test_random_views_keep_real_faces_recognisable_and_the_fixed_view_at_amount_zero(small_pack):
    """id_view_jitter: the identity network sees a crop through a small random shift/scale/turn
    and colour gain. At amount 0 that is the fixed view exactly; at amount 1 the features change
    but every real CFP frontal is still nearest its own fixed-view embedding among four people,
    and the gradient reaches the image through the view."""
    from pifr.train.losses import RandomView
    from pifr.train.validation import identity_network

    x = _first_frontal_of_each_person(small_pack)
    assert len(x) == 4
    feats = identity_network("dlib_resnet")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fixed = torch.nn.functional.normalize(feats(x)["embedding"], dim=1)
        still = feats(x, RandomView.draw(4, 0.0, g, torch.device("cpu")))["embedding"]
        moved = torch.nn.functional.normalize(feats(x, RandomView.draw(4, 1.0, g, torch.device("cpu")))["embedding"], dim=1)
    assert torch.allclose(torch.nn.functional.normalize(still, dim=1), fixed, atol=1e-5)
    sim = moved @ fixed.T
    assert float((moved * fixed).sum(1).max()) < 0.9999  # the view does change what the network sees
    assert sim.argmax(1).tolist() == [0, 1, 2, 3]
    x.requires_grad_(True)
    feats(x, RandomView.draw(4, 1.0, g, torch.device("cpu")))["embedding"].sum().backward()
    assert x.grad.abs().sum() > 0


def test_two_identity_networks_teach_as_one_with_the_mean_of_their_cosines(small_pack, tmp_path):
    """identity_net="dlib_resnet+mobilefacenet": the ensemble's embedding is a unit vector whose
    cosine between two real CFP crops is the mean of the two networks' cosines, every member's
    maps are there under its name, gradients reach the image through both, and a trainer step
    with it moves the generator. A weights list that does not match the networks is refused."""
    from pifr.train.validation import identity_network

    x = _first_frontal_of_each_person(small_pack)
    ens = identity_network("dlib_resnet+mobilefacenet", "dlib_resnet_fp16+")
    f = ens(x.requires_grad_(True))
    e = f["embedding"]
    assert torch.allclose(e.norm(dim=1), torch.ones(len(x)), atol=1e-5)
    members = [torch.nn.functional.normalize(f[f"{n}.embedding"], dim=1) for n in ("dlib_resnet", "mobilefacenet")]
    mean_cos = sum(m @ m.T for m in members) / 2
    assert torch.allclose(e @ e.T, mean_cos, atol=1e-5)
    assert {"dlib_resnet.embedding", "mobilefacenet.s1"} <= set(f)
    g = torch.autograd.grad(f["dlib_resnet.embedding"].sum(), x, retain_graph=True)[0]
    h = torch.autograd.grad(f["mobilefacenet.embedding"].sum(), x)[0]
    assert g.abs().sum() > 0 and h.abs().sum() > 0
    with pytest.raises(ValueError):
        identity_network("dlib_resnet+mobilefacenet", "dlib_resnet_fp16")
    t = Trainer(_cfg(small_pack, tmp_path / "ens", identity_net="dlib_resnet+mobilefacenet",
                     identity_weights="dlib_resnet_fp16+", adversarial="none",
                     weights={**{k: 0.0 for k in L.LossWeights().to_dict()}, "id_cos": 1.0}))
    g0 = [p.detach().clone() for p in t.g.parameters()]
    assert as_floats(t.train_step())["g_id_cos"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(g0, t.g.parameters()))


def test_id_view_jitter_changes_only_the_identity_terms(small_pack, tmp_path):
    """The same first step with and without id_view_jitter: same batch, same generator, same
    pixel term; the identity terms differ (the network saw another view)."""
    base = dict(pack=str(small_pack), train_identities="1-3", val_pack="", width=0.125, batch=2, identity_net="mobilefacenet",
                identity_weights="", weights={**L.LossWeights().to_dict(), "id_cos": 1.0}, sample_every=0, val_every=0,
                log_every=1, resume=False, adversarial="none")
    terms = []
    for j in (0.0, 1.0):
        torch.manual_seed(0)
        tr = Trainer(TrainConfig(**base, out=str(tmp_path / f"j{j}"), id_view_jitter=j))
        terms.append(as_floats(tr.train_step()))
    assert terms[0]["g_pixel"] == pytest.approx(terms[1]["g_pixel"], abs=1e-6)
    assert abs(terms[0]["g_id_cos"] - terms[1]["g_id_cos"]) > 1e-4 and abs(terms[0]["g_ip"] - terms[1]["g_ip"]) > 1e-6


def test_shipped_fp16_dlib_identity_network_matches_the_dat(small_pack, tmp_path):
    """identity_weights="dlib_resnet_fp16" (weights/, for machines without face-recognition-models)
    gives the same embeddings of real CFP crops as dlib's .dat, and the same gradients' direction."""
    kw = dict(val_pack="", identity_net="dlib_resnet")
    a = Trainer(_cfg(small_pack, tmp_path / "a", **kw)).id_feats
    b = Trainer(_cfg(small_pack, tmp_path / "b", identity_weights="dlib_resnet_fp16", **kw)).id_feats
    x = torch.stack([PairDataset(Pack.load(small_pack))[i]["input"] for i in range(8)]).requires_grad_(True)
    ea, eb = a(x)["embedding"], b(x)["embedding"]
    cos = torch.nn.functional.cosine_similarity(ea, eb, dim=1)
    assert float(cos.min().detach()) > 0.99999, cos
    ga = torch.autograd.grad(ea.sum(), x)[0]
    gb = torch.autograd.grad(eb.sum(), x)[0]
    assert float(torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0)) > 0.99  # measured 0.9989
