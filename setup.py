"""Installs mtarcface_tf: MTArcFace (arXiv 2104.09874) in TensorFlow 2 / Keras 3."""
from setuptools import find_packages, setup

setup(
    name="mtarcface_tf",
    version="0.1.0",
    description="Masked face recognition with Multi-Task ArcFace (TensorFlow 2 / Keras 3)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # configs/ (top level, per the design) is also importable as mtarcface_tf.configs, so configs can share a base.
    packages=find_packages(include=["mtarcface_tf", "mtarcface_tf.*"]) + ["mtarcface_tf.configs"],
    package_dir={"mtarcface_tf.configs": "configs"},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10",
        "numpy>=1.26",
        "opencv-python-headless>=4.9",
        "absl-py>=2.1",
        "ml-collections>=0.1.1",
        "matplotlib>=3.8",
        "scikit-learn>=1.4",
        "scipy>=1.11",
        "tqdm>=4.66",
        "mtcnn>=1.0.0",
        # the gallery's ANN index past gallery.ann_threshold people (search/index.py, docs/gallery.md)
        "faiss-cpu>=1.8",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "scikit-image>=0.22", "jax[cpu]>=0.4.30",
                # Keras 2, the independent implementation the reference-fidelity tests compare with
                "tf-keras>=2.21,<2.22",
                # the ANN libraries the gallery's index is measured against (bench/gallery.py, test_search_index.py;
                # ScaNN's numpy searcher only: its TensorFlow ops do not load beside TensorFlow 2.21)
                "usearch>=2.12", "scann>=1.4",
                # the linter behind `make lint` (ruff.toml; CI runs it)
                "ruff>=0.6"],
        "datasets": ["tensorflow-datasets>=4.9", "importlib_resources"],
        "jax": ["jax>=0.4.30"],
        # ONNX export (tf2onnx) and running it (onnxruntime), insightface's model format.
        "onnx": ["tf2onnx>=1.16", "onnx>=1.16", "onnxruntime>=1.18"],
    },
)
