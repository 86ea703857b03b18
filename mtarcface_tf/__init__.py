"""mtarcface_tf: MTArcFace (arXiv 2104.09874) in TensorFlow 2 / Keras 3.

Subpackages follow the flow of data: data -> model -> train -> eval / export -> inference.
Importing the package imports nothing heavy; each subpackage loads its modules on first use.
"""

__version__ = "0.1.0"
