"""The default detector is RetinaFace (it finds masked faces MTCNN misses); MTCNN, with a note, when it is missing."""
import logging

import pytest

from mtarcface_tf.faces import detect


def _without_retinaface(monkeypatch):
    def missing():
        raise detect.DetectorUnavailableError(f"the 'retinaface' package is not installed; run: "
                                              f"{detect.RETINAFACE_INSTALL}")
    monkeypatch.setattr(detect.RetinaFaceDetector, "graph_path", staticmethod(missing))


def test_default_is_retinaface_when_its_weights_are_installed(monkeypatch):
    monkeypatch.setattr(detect.RetinaFaceDetector, "graph_path", staticmethod(lambda: "frozen_graph.pb"))
    assert detect.choose_detector() == ("retinaface", "")
    assert isinstance(detect.make_detector(), detect.RetinaFaceDetector)


def test_default_falls_back_to_mtcnn_with_a_one_line_note(monkeypatch, caplog):
    _without_retinaface(monkeypatch)
    name, note = detect.choose_detector()
    assert name == "mtcnn"
    assert "\n" not in note and "RetinaFace" in note and detect.RETINAFACE_INSTALL in note
    with caplog.at_level(logging.WARNING):
        assert isinstance(detect.make_detector(), detect.MTCNNDetector)
    assert note in caplog.text


def test_an_explicit_choice_is_kept_and_never_falls_back(monkeypatch):
    _without_retinaface(monkeypatch)
    assert detect.choose_detector("mtcnn") == ("mtcnn", "")
    assert isinstance(detect.make_detector("mtcnn"), detect.MTCNNDetector)
    with pytest.raises(detect.DetectorUnavailableError, match="retinaface"):
        detect.make_detector("retinaface")
