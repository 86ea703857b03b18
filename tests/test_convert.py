"""Converters: RecordIO / folder / .bin -> TFRecord round trips, skipped items, refusing to overwrite, resume, tool."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.data import convert, records, recordio, shards
from mtarcface_tf.data.bin_pairs import save_bin
from mtarcface_tf.faces.detect import Face

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def jpeg(seed, size=112):
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def read_back(output_dir, name="train"):
    files = records.list_shards(records.manifest_path(str(output_dir), name))
    return [(image.numpy(), int(label)) for image, label in tf.data.TFRecordDataset(files).map(records.parse_example)]


@pytest.fixture
def rec_file(tmp_path):
    """insightface-style .rec: header, 9 images of 3 identities (labels 0,0,0,1,...), identity records."""
    images = [jpeg(i) for i in range(9)]
    labels = [i // 3 for i in range(9)]
    payloads = [recordio.pack_payload([10, 13], b"")]
    payloads += [recordio.pack_payload(float(lab), img) for lab, img in zip(labels, images)]
    payloads += [recordio.pack_payload([1 + 3 * i, 4 + 3 * i], b"") for i in range(3)]
    rec = tmp_path / "src" / "train.rec"
    rec.parent.mkdir()
    recordio.write_recordio(str(rec), str(rec.with_suffix(".idx")), enumerate(payloads))
    return rec, list(zip(images, labels))


@pytest.mark.parametrize("with_index", [True, False])
def test_recordio_round_trip(tmp_path, rec_file, with_index):
    rec, expected = rec_file
    if not with_index:
        rec.with_suffix(".idx").unlink()
    out = tmp_path / "out"
    manifest = convert.convert_recordio(str(rec), str(out), "train", num_shards=3, workers=2, progress=False,
                                        command="convert test")
    assert sorted(read_back(out), key=lambda r: r[0]) == sorted(expected, key=lambda r: r[0])
    # shards hold contiguous key ranges, so reading them in order gives the .rec order
    assert read_back(out) == expected
    assert manifest == records.read_manifest(str(out / "train.manifest.json"))
    assert manifest["images"] == 9 and manifest["identities"] == 3 and manifest["header_identities"] == 3
    assert manifest["shards"] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert manifest["command"] == "convert test" and manifest["source"] == str(rec)
    assert sorted(os.listdir(out)) == sorted(manifest["shards"] + ["train.manifest.json"])


def test_refuses_existing_output(tmp_path, rec_file):
    rec, _ = rec_file
    convert.convert_recordio(str(rec), str(tmp_path), "train", num_shards=1, progress=False)
    with pytest.raises(shards.ConversionError, match="train.manifest.json already exists"):
        convert.convert_recordio(str(rec), str(tmp_path), "train", num_shards=1, progress=False)
    with pytest.raises(shards.ConversionError, match="already exists"):
        convert.convert_recordio(str(rec), str(tmp_path), "train", num_shards=1, resume=True, progress=False)


class _FailingJob:
    """Wraps a job so that writing shard ``fail_at`` (by start item) raises, as an interrupted run would."""

    def __init__(self, job, fail_start):
        self.job, self.fail_start = job, fail_start

    def __len__(self):
        return len(self.job)

    def write(self, start, stop, writer, counter):
        if start == self.fail_start:
            raise KeyboardInterrupt
        return self.job.write(start, stop, writer, counter)


def test_resume_writes_only_missing_shards(tmp_path, rec_file):
    rec, expected = rec_file
    out = str(tmp_path / "out")
    job = convert.RecordIOJob(str(rec))
    with pytest.raises(KeyboardInterrupt):
        shards.run_conversion(_FailingJob(job, fail_start=6), out, "train", "src", num_shards=3, progress=False)
    assert sorted(os.listdir(out)) == ["train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord",
                                       "train.progress.json"]
    first = os.path.join(out, "train-00000-of-00003.tfrecord")
    os.utime(first, (1, 1))
    with pytest.raises(shards.ConversionError, match="partial conversion.*--resume"):
        shards.run_conversion(job, out, "train", "src", num_shards=3, progress=False)
    with pytest.raises(shards.ConversionError, match="same input"):
        shards.run_conversion(job, out, "train", "other", num_shards=3, resume=True, progress=False)
    manifest = shards.run_conversion(job, out, "train", "src", num_shards=3, resume=True, progress=False)
    assert os.path.getmtime(first) == 1  # kept, not rewritten
    assert manifest["images"] == 9 and manifest["identities"] == 3
    assert read_back(out) == expected
    assert not os.path.exists(os.path.join(out, "train.progress.json"))


def make_folder(root):
    """Two identities; one corrupt file and one 100x100 image among them."""
    for person, seeds in (("bob", [1, 2]), ("alice", [3, 4])):
        (root / person).mkdir(parents=True)
        for s in seeds:
            (root / person / f"{s}.jpg").write_bytes(jpeg(s))
    (root / "alice" / "broken.jpg").write_bytes(b"not an image")
    (root / "bob" / "small.png").write_bytes(cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes())
    (root / "bob" / "notes.txt").write_text("ignored: not an image")


def test_folder_conversion_counts_skipped(tmp_path):
    src, out = tmp_path / "faces", tmp_path / "out"
    make_folder(src)
    manifest = convert.convert_folder(str(src), str(out), "train", workers=2, num_shards=2, progress=False)
    assert manifest["images"] == 4 and manifest["identities"] == 2
    assert manifest["skipped"] == {"unreadable": 1, "wrong_size": 1}
    assert manifest["skipped_items"]["unreadable"] == [str(src / "alice" / "broken.jpg")]
    assert json.loads((out / "labels.json").read_text()) == {"alice": 0, "bob": 1}
    assert sorted(read_back(out)) == sorted([(jpeg(3), 0), (jpeg(4), 0), (jpeg(1), 1), (jpeg(2), 1)])
    summary = "\n".join(convert.format_summary(manifest, str(out)))
    assert "broken.jpg" in summary and "--align" in summary and "small.png (100x100)" in summary


class FakeDetector:
    """Finds no face in dark images, two faces in bright ones, else one (landmarks = the template scaled x2)."""

    TEMPLATE = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]], np.float32)

    def detect(self, image_rgb):
        template = self.TEMPLATE
        big = Face(np.array([0, 0, 224, 224], np.float32), 0.99, template * 2)
        small = Face(np.array([0, 0, 20, 20], np.float32), 0.9, template / 5)
        mean = image_rgb.mean()
        return [] if mean < 50 else [small, big] if mean > 200 else [big]


def test_folder_conversion_with_alignment(tmp_path):
    src, out = tmp_path / "photos", tmp_path / "out"
    (src / "carol").mkdir(parents=True)
    gradient = np.tile(np.linspace(60, 190, 224, dtype=np.uint8)[None, :, None], (224, 1, 3))
    for name, image in (("dark", np.zeros((224, 224, 3), np.uint8)), ("one", gradient),
                        ("two", np.full((224, 224, 3), 230, np.uint8))):
        cv2.imwrite(str(src / "carol" / f"{name}.png"), image)
    manifest = convert.convert_folder(str(src), str(out), "train", detector=FakeDetector(), workers=2,
                                      progress=False)
    assert manifest["images"] == 2 and manifest["skipped"] == {"no_face": 1}
    assert manifest["notes"] == {"several_faces_took_largest": 1}
    assert manifest["noted_items"]["several_faces_took_largest"] == [str(src / "carol" / "two.png")]
    written = read_back(out)  # file order: one.png, two.png
    assert all(img[:3] == b"\xff\xd8\xff" for img, _ in written)
    faces = [cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for img, _ in written]
    assert all(f.shape == (112, 112, 3) for f in faces)
    # landmarks at twice the template: the aligned face is the whole 224x224 image at half size
    expected = cv2.resize(gradient, (112, 112), interpolation=cv2.INTER_AREA)
    assert np.abs(faces[0].astype(int) - expected).mean() < 3
    assert np.abs(faces[1].astype(int) - 230).mean() < 3
    # the landmarks go through the alignment with the face: twice the template / 2 = the template
    for landmarks in read_landmarks(out):
        np.testing.assert_allclose(landmarks, FakeDetector.TEMPLATE, atol=0.05)


def read_landmarks(output_dir, name="train"):
    files = records.list_shards(records.manifest_path(str(output_dir), name))
    parsed = tf.data.TFRecordDataset(files).map(records.parse_example_with_landmarks)
    return [landmarks.numpy() for _, _, landmarks in parsed]


class CropDetector:
    """Finds the template's landmarks in whatever frame it is given (padded and upscaled crops included), except
    in dark crops (no face)."""

    def __init__(self):
        self.sides = []

    def detect(self, image_rgb):
        self.sides.append(image_rgb.shape[0])
        if image_rgb.mean() < 50:
            return []
        crop = 112
        border = round(0.5 * crop)          # CROP_PADDING: the crop sits at [border, border + 112) before upscaling
        ratio = image_rgb.shape[0] / (crop + 2 * border)
        landmarks = (FakeDetector.TEMPLATE + border + 0.5) * ratio - 0.5
        return [Face(np.array([0, 0, 10, 10], np.float32), 0.9, landmarks)]


def test_add_landmarks_with_a_detector_on_every_crop(tmp_path):
    src = tmp_path / "records"
    with shards.ShardedRecordWriter(str(src), "train", num_shards=2) as writer:
        for i in range(6):
            image = np.full((112, 112, 3), 10 if i == 4 else 120, np.uint8)
            writer.write(cv2.imencode(".jpg", image)[1].tobytes(), i // 2)
        writer.close()
    detector = CropDetector()
    manifest = convert.add_landmarks(str(src), str(tmp_path / "out"), "train", detector=detector, method="detector",
                                     num_shards=3,
                                     progress=False)
    assert manifest["images"] == 6 and manifest["identities"] == 3
    assert manifest["notes"] == {convert.LandmarkJob.NO_FACE: 1} and manifest["landmarks_by"] == "CropDetector"
    assert set(detector.sides) == {448}                      # 112 padded to 224, upscaled x2
    found = read_landmarks(tmp_path / "out")
    assert sum(np.isnan(points).all() for points in found) == 1
    for landmarks in found:
        if not np.isnan(landmarks).any():
            np.testing.assert_allclose(landmarks, FakeDetector.TEMPLATE, atol=1e-3)
    assert sorted(read_back(tmp_path / "out")) == sorted(read_back(src))
    summary = "\n".join(convert.format_summary(manifest, str(tmp_path / "out")))
    assert "found on 5 of 6 crops" in summary


def test_bin_conversion(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (8, 112, 112, 3), dtype=np.uint8)
    save_bin(str(tmp_path / "lfw.bin"), images, [True, False, False, True])
    manifest = convert.convert_bin(str(tmp_path / "lfw.bin"), str(tmp_path / "out"), "lfw", num_shards=2,
                                   progress=False)
    # Only a same-pair's two images share a label; each image of a different pair has its own.
    assert [label for _, label in read_back(tmp_path / "out", "lfw")] == [0, 0, 1, 2, 3, 4, 5, 5]
    assert manifest["images"] == 8 and manifest["identities"] == 6
    pairs = json.loads((tmp_path / "out" / "lfw.pairs.json").read_text())
    assert pairs == {"issame": [True, False, False, True]}


def test_tool_reports_missing_input_in_one_line(tmp_path):
    missing = tmp_path / "nothing.rec"
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert.py"), f"--input={missing}",
                             f"--output_dir={tmp_path / 'out'}"], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"},
                            timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {missing}: RecordIO file not found"
