"""Test support, imported normally (``from tests.support import tiny``) by tests and by benches run from the
repository root (``python -m bench.NAME``). Not test modules:

- ``tiny``: the one tiny config (``tiny_config``), a tiny MTArcFace (``build_tiny_model``), a tiny learnable record
  set (``write_tiny_records``), a saved training workdir (``save_workdir``), the tests' numpy reference of an export's
  outputs (``keras_reference``).
- ``processes``: tools and scripts in a fresh Python process from the repository root; the one-error-line check.
- ``rest``: TF Serving's REST request/response format, the independent side of the export's REST tests.
- ``ijb_reference``: a loop transcription of insightface's eval_ijbc.py (tests/test_ijb.py, bench/ijb.py).
- ``verification_reference``: a loop transcription of insightface's verification loops (tests/test_verification.py,
  bench/verification.py).
- ``tfkeras_reference``: the reference network re-created in tf_keras (Keras 2), run as a subprocess script.
"""
