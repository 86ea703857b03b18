"""Landmarks of aligned crops: O-Net on the fixed box against SynthFaces' true landmarks, the refined pass against
the geometry of moved crops, the fallback detector where O-Net is unsure, and the resumable add_landmarks stage."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.data import convert, records, shards, synthetic
from mtarcface_tf.faces.align import ARCFACE_TEMPLATE
from mtarcface_tf.faces.crop_landmarks import CropLandmarker
from mtarcface_tf.faces.detect import CROP_PADDING, Face

POSE = dict(rotation=8.0, scale=0.05, shift=3.0, yaw=20.0)   # bench/crop_landmarks.py's SynthFaces pose
TEMPLATE = np.asarray(ARCFACE_TEMPLATE, np.float32)
WORKERS_TIMEOUT_S = 300   # a hung worker pool fails the test instead of blocking it


@pytest.fixture(scope="module")
def synth():
    images, labels, landmarks = synthetic.render_faces(12, 2, image_size=112, seed=3, pose=POSE, with_landmarks=True)
    return images, labels, landmarks


def mean_error(found, truth):
    return float(np.linalg.norm(found - truth, axis=-1).mean())


def test_onet_finds_synthfaces_landmarks(synth):
    images, _, truth = synth
    landmarker = CropLandmarker(fallback=None, batch_size=16)   # 24 crops: one full batch and a padded one
    found, confidence = landmarker.onet(images)
    assert found.shape == (24, 5, 2) and found.dtype == np.float32 and confidence.shape == (24,)
    error, template_error = mean_error(found, truth), mean_error(TEMPLATE, truth)
    # Measured 3.3 px on 200 such crops (RetinaFace on the crops: 2.7 px); the template itself is ~8 px off.
    assert error < 4.5 and error < 0.55 * template_error, (error, template_error)
    np.testing.assert_allclose(landmarker.onet(images[5:6])[0][0], found[5], atol=1e-3)   # batch-independent
    result = CropLandmarker(fallback=None, batch_size=16, refine=False)(images)
    assert not result.fallback.any() and result.found.all()
    np.testing.assert_allclose(result.landmarks, found)


def shifted(images, dx, dy):
    """The crops moved by (dx, dy) pixels, the uncovered border filled with its edge pixels."""
    padded = np.pad(images, ((0, 0), (8, 8), (8, 8), (0, 0)), mode="edge")
    return np.ascontiguousarray(padded[:, 8 - dy:120 - dy, 8 - dx:120 - dx])


@pytest.mark.parametrize("dx, dy", [(4, -3), (2, -4)])
def test_refined_pass_moves_with_the_face(synth, dx, dy):
    images, offset = synth[0], np.array([dx, dy], np.float32)
    landmarker = CropLandmarker(fallback=None, batch_size=16)
    first, _ = landmarker.onet(images)
    refined, _ = landmarker.refined(images, first)
    # Given a first estimate moved with the face, the refined box reads the same pixels: the answer moves exactly.
    moved, _ = landmarker.refined(shifted(images, dx, dy), first + offset)
    np.testing.assert_allclose(moved, refined + offset, atol=0.01)
    # The whole cascade on moved crops: the fixed box does not move with the face, the refined one nearly does.
    fixed_on_moved, _ = landmarker.onet(shifted(images, dx, dy))
    cascade_on_moved, _ = landmarker.refined(shifted(images, dx, dy), fixed_on_moved)
    fixed_error, cascade_error = mean_error(fixed_on_moved, first + offset), mean_error(cascade_on_moved,
                                                                                       refined + offset)
    assert cascade_error < 1.2 and cascade_error < 0.7 * fixed_error, (cascade_error, fixed_error)


def test_passes_that_disagree_go_to_the_fallback(synth):
    images = synth[0]
    landmarker = CropLandmarker(fallback=None, batch_size=16)
    first, _ = landmarker.onet(images)
    refined, confidence = landmarker.refined(images, first)
    disagreement = np.linalg.norm(refined - first, axis=-1).mean(axis=-1)
    threshold = float(np.median(disagreement))
    result = CropLandmarker(min_confidence=0.0, fallback=TemplateDetector(), batch_size=16,
                            max_disagreement=threshold, min_box_move=0.0)(images)
    np.testing.assert_array_equal(result.fallback, disagreement > threshold)
    np.testing.assert_allclose(result.landmarks[~result.fallback], refined[~result.fallback], atol=1e-4)
    fallback = result.landmarks[result.fallback]
    np.testing.assert_allclose(fallback, np.broadcast_to(TEMPLATE, fallback.shape), atol=1e-3)
    np.testing.assert_allclose(result.confidence, confidence)
    # Crops whose box would move less than min_box_move keep the fixed-box pass (and cannot disagree).
    move = landmarker.box_move(first)
    keep = move < np.median(move)
    result = CropLandmarker(min_confidence=0.0, fallback=TemplateDetector(), batch_size=16,
                            max_disagreement=threshold, min_box_move=float(np.median(move)))(images)
    np.testing.assert_allclose(result.landmarks[keep], first[keep], atol=1e-4)
    np.testing.assert_allclose(result.landmarks[~keep & ~result.fallback], refined[~keep & ~result.fallback], atol=1e-4)
    assert not result.fallback[keep].any()


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
    result = CropLandmarker(min_confidence=threshold, fallback=detector, refine=False)(images)
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
    expected = CropLandmarker(fallback=TemplateDetector())(images).landmarks[order]
    np.testing.assert_allclose(found[faces], expected[faces], atol=1e-3)


@pytest.mark.slow   # slow tier (a multi-process or XLA run of over half a minute on 2 idle cores)
def test_add_landmarks_workers_after_tensorflow_ran(tmp_path, synth):
    """Workers started by a process that already ran TensorFlow finish (forked ones hang: its thread pools do not
    survive a fork) and write what one in-process worker writes. Run in a child process, killed if it hangs."""
    images, labels, _ = synth
    write_records(tmp_path / "src", images, labels)
    script = (f"import tensorflow as tf\n"
              f"from mtarcface_tf.data import convert\n"
              f"tf.linalg.matmul(tf.ones((256, 256)), tf.ones((256, 256))).numpy()\n"
              f"convert.add_landmarks({str(tmp_path / 'src')!r}, {str(tmp_path / 'two')!r}, 'train', workers=2, "
              f"num_shards=2, batch_size=8, min_confidence=0.0, progress=False)\n")
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        assert child.wait(timeout=WORKERS_TIMEOUT_S) == 0
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)                     # the child and its hung workers
        pytest.fail(f"add_landmarks with 2 workers did not finish in {WORKERS_TIMEOUT_S} s")
    convert.add_landmarks(str(tmp_path / "src"), str(tmp_path / "one"), "train", workers=1, num_shards=2,
                          batch_size=8, min_confidence=0.0, progress=False)
    two, one = read_back(tmp_path / "two"), read_back(tmp_path / "one")
    np.testing.assert_array_equal(two[0], one[0])
    np.testing.assert_allclose(two[1], one[1], atol=1e-3)
    assert not np.isnan(one[1]).any()
