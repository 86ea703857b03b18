"""Shared pytest setup: quiet TensorFlow logs and keep tests on the CPU with the TensorFlow Keras backend."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the slow tier (end-to-end runs, over ~30 s on an idle machine): "
                                       "`make test` leaves it out, `make test-slow` runs it, CI runs both")
