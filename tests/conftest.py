"""Shared pytest setup: quiet TensorFlow logs and keep tests on the CPU with the TensorFlow Keras backend."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the paper-size network; still part of the suite")
