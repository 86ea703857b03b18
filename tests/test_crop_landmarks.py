"""Landmarks of aligned crops: O-Net on the fixed box against SynthFaces' true landmarks, the resampling against
tf.image.crop_and_resize, the fallback detector where O-Net is unsure, and the resumable add_landmarks stage."""
import os

import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.data import convert, records, shards, synthetic
from mtarcface_tf.faces.align import ARCFACE_TEMPLATE
from mtarcface_tf.faces.crop_landmarks import CropLandmarker, resample_matrix
from mtarcface_tf.faces.detect import CROP_PADDING, Face

POSE = dict(rotation=8.0, scale=0.05, shift=3.0, yaw=20.0)   # bench/crop_landmarks.py's SynthFaces pose
TEMPLATE = np.asarray(ARCFACE_TEMPLATE, np.float32)


@pytest.fixture(scope="module")
def synth():
    images, labels, landmarks = synthetic.render_faces(12, 2, image_size=112, seed=3, pose=POSE, with_landmarks=True)
    return images, labels, landmarks


def mean_error(found, truth):
    return float(np.linalg.norm(found - truth, axis=-1).mean())


@pytest.mark.parametrize("box", [(0.18, 0.12, 0.93, 0.87), (-0.1, 0.05, 1.2, 0.9)])
def test_resample_matrix_matches_crop_and_resize(box):
    images = np.random.default_rng(0).uniform(-1, 1, (2, 40, 40, 3)).astype(np.float32)
    y1, x1, y2, x2 = box
    expected = tf.image.crop_and_resize(images, [box, box], [0, 1], (16, 16)).numpy()
    found = np.einsum("ij,bjkc,lk->bilc", resample_matrix(y1, y2, 40, 16), images, resample_matrix(x1, x2, 40, 16))
    np.testing.assert_allclose(found, expected, atol=1e-5)


def test_onet_finds_synthfaces_landmarks(synth):
    images, _, truth = synth
    landmarker = CropLandmarker(fallback=None, batch_size=16)   # 24 crops: one full batch and a padded one
    found, confidence = landmarker.onet(images)
    assert found.shape == (24, 5, 2) and found.dtype == np.float32 and confidence.shape == (24,)
    error, template_error = mean_error(found, truth), mean_error(TEMPLATE, truth)
    # Measured 3.3 px on 200 such crops (RetinaFace on the crops: 2.7 px); the template itself is ~8 px off.
    assert error < 4.5 and error < 0.55 * template_error, (error, template_error)
    np.testing.assert_allclose(landmarker.onet(images[5:6])[0][0], found[5], atol=1e-3)   # batch-independent
    result = landmarker(images)
    assert not result.fallback.any() and result.found.all()
    np.testing.assert_allclose(result.landmarks, found)


class TemplateDetector:
    """Finds the template's landmarks in the padded, upscaled crop ``landmarks_on_aligned_crop`` hands it; no face
    in a blank crop, nor anywhere when ``faceless``."""

    def __init__(self, faceless=False):
        self.calls, self.faceless = 0, faceless

    def detect(self, image_rgb):
        self.calls += 1
        if self.faceless or image_rgb.std() == 0:
            return []
        border = round(CROP_PADDING * 112)
        landmarks = (TEMPLATE + border + 0.5) * image_rgb.shape[0] / (112 + 2 * border) - 0.5
        return [Face(np.array([0, 0, 10, 10], np.float32), 0.9, landmarks)]


def test_fallback_where_onet_is_unsure(synth):
    images = synth[0][:4]
    onet_landmarks, confidence = CropLandmarker(fallback=None).onet(images)
    threshold = float(np.sort(confidence)[1])            # exactly one crop below it
    detector = TemplateDetector()
    result = CropLandmarker(min_confidence=threshold, fallback=detector)(images)
    unsure = confidence < threshold
    assert unsure.sum() == 1 and detector.calls == 1
    np.testing.assert_array_equal(result.fallback, unsure)
    np.testing.assert_allclose(result.landmarks[unsure][0], TEMPLATE, atol=1e-3)
    np.testing.assert_allclose(result.landmarks[~unsure], onet_landmarks[~unsure])
    # Forced everywhere: every crop goes to the detector; where it finds nothing the crop has no landmarks.
    result = CropLandmarker(min_confidence=1.01, fallback=TemplateDetector(faceless=True))(images)
    assert result.fallback.all() and not result.found.any() and np.isnan(result.landmarks).all()


def write_records(path, images, labels):
    with shards.ShardedRecordWriter(str(path), "train", num_shards=2) as writer:
        for image, label in zip(images, labels):
            writer.write(tf.io.encode_png(image).numpy(), int(label))
        writer.close()


def read_back(output_dir):
    """Returns (images uint8 [N, S, S, 3], landmarks float32 [N, 5, 2]) in record order."""
    files = records.list_shards(records.manifest_path(str(output_dir), "train"))
    parsed = list(tf.data.TFRecordDataset(files).map(records.parse_example_with_landmarks))
    return (np.stack([tf.io.decode_png(raw).numpy() for raw, _, _ in parsed]),
            np.stack([landmarks.numpy() for _, _, landmarks in parsed]))


def test_add_landmarks_fast_path_resumes(tmp_path, synth, monkeypatch):
    images, labels, truth = synth
    images, labels, truth = images[:10].copy(), labels[:10], truth[:10]
    images[7] = 127                                              # no face: O-Net unsure, the detector finds none
    write_records(tmp_path / "src", images, labels)
    out = tmp_path / "out"
    write = convert.LandmarkJob.write

    def interrupted(job, start, stop, writer, counter):
        if start > 0:
            raise KeyboardInterrupt
        return write(job, start, stop, writer, counter)

    monkeypatch.setattr(convert.LandmarkJob, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert.add_landmarks(str(tmp_path / "src"), str(out), "train", detector=TemplateDetector(),
                              num_shards=3, batch_size=2, progress=False)
    first = out / "train-00000-of-00003.tfrecord"
    os.utime(first, (1, 1))
    monkeypatch.setattr(convert.LandmarkJob, "write", write)
    manifest = convert.add_landmarks(str(tmp_path / "src"), str(out), "train", detector=TemplateDetector(),
                                     num_shards=3, batch_size=4, resume=True, progress=False)
    assert os.path.getmtime(first) == 1                          # the finished shard was kept
    assert manifest["images"] == 10 and manifest["landmarks_by"] == "onet+TemplateDetector"
    assert manifest["notes"][convert.LandmarkJob.NO_FACE] == 1
    assert manifest["notes"][convert.LandmarkJob.FALLBACK] >= 1
    written, found = read_back(out)
    # ShardedRecordWriter deals the source round-robin into its shards: match the records to the inputs.
    order = [next(i for i, image in enumerate(images) if np.array_equal(image, record)) for record in written]
    assert sorted(order) == list(range(10))
    blank = order.index(7)
    assert np.isnan(found[blank]).all()
    faces = np.arange(10) != blank
    assert mean_error(found[faces], truth[order][faces]) < 4.5
