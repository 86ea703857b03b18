"""mtarcface_tf: MTArcFace (arXiv 2104.09874) in TensorFlow 2 / Keras 3.

Layers, lowest first (imports run only downward; tests/test_layering.py checks it):
faces, results -> data -> model -> configs -> export -> eval -> train -> inference -> demo, rehearsal.
Importing this package imports nothing heavy; each subpackage's ``__init__`` is its public API.
"""

__version__ = "0.1.0"
