"""FaceRecognizer and Gallery mechanics with an untrained tiny export (no accuracy claims)."""
import json
import os

import numpy as np
import pytest

from mtarcface_tf.export.saved_model import export_saved_model
from mtarcface_tf.faces import detect
from mtarcface_tf.faces.align import template_for
from mtarcface_tf.inference.gallery import EmptyGalleryError, Gallery, GalleryError
from mtarcface_tf.inference.media import annotate
from mtarcface_tf.inference.recognizer import (
    DEFAULT_COSINE_THRESHOLD,
    FaceRecognizer,
    NoFaceError,
    condition_thresholds,
    threshold_from_metadata,
)
from mtarcface_tf.model.workdir import ModelLoadError
from tests.support import tiny

SIZE = 32


class FakeDetector(detect.Detector):
    """Returns preset faces: ``faces`` is a list of (box [4], scale of the template) in image pixels."""

    def __init__(self, faces):
        self.faces = faces

    def _detect_rgb(self, image_rgb):
        return [detect.Face(np.asarray(box, np.float32), 0.99, template_for(SIZE) * scale + box[:2])
                for box, scale in self.faces]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    model, _ = tiny.build_tiny_model(input_size=SIZE)
    return export_saved_model(model, tmp_path_factory.mktemp("export") / "1",
                              threshold={"cosine_similarity": 0.5, "squared_distance": 1.0})


@pytest.fixture(scope="module")
def faces():
    """uint8 [12, S, S, 3] aligned faces of 4 identities x 3 images, and their labels."""
    try:
        from mtarcface_tf.data.synthetic import render_faces
    except ImportError:
        return tiny.random_faces(12, SIZE), np.repeat(np.arange(4), 3)
    return render_faces(4, 3, image_size=SIZE, seed=0)


def test_embed_shapes_and_threshold_from_export(export_dir, faces):
    recognizer = FaceRecognizer(export_dir)
    assert recognizer.threshold == pytest.approx(0.5) and recognizer.input_size == SIZE
    embeddings, mask_prob = recognizer.embed(faces[0][:5])
    assert embeddings.shape == (5, 16) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(mask_prob.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="aligned faces"):
        recognizer.embed(np.zeros((1, SIZE, SIZE, 3), np.float32))
    assert FaceRecognizer(export_dir, threshold=0.1).threshold == 0.1


def test_threshold_sources():
    assert threshold_from_metadata({"recommended_threshold": {"squared_distance": 1.2}}) == pytest.approx(0.4)
    assert threshold_from_metadata({}) is None
    assert DEFAULT_COSINE_THRESHOLD == pytest.approx(0.3)


def test_enroll_identify_verify(export_dir, faces):
    images, labels = faces
    recognizer = FaceRecognizer(export_dir, threshold=-1.0)
    for person in range(3):
        count, failures = recognizer.enroll(f"p{person}", list(images[labels == person]), aligned=True)
        assert (count, failures) == (3, [])
    assert recognizer.gallery.names == ["p0", "p1", "p2"]
    np.testing.assert_array_equal(recognizer.gallery.counts, [3, 3, 3])
    results = recognizer.identify(images[0], top_k=5, aligned=True)
    assert len(results) == 1
    candidates = results[0]["candidates"]
    assert len(candidates) == 3 and [c["similarity"] for c in candidates] == sorted(
        [c["similarity"] for c in candidates], reverse=True)
    assert results[0]["identity"] == candidates[0]["name"]
    assert results[0]["mask"]["status"] in ("mask", "no_mask")
    # Each of three people enrolled from one distinct image is found, by that image, with similarity 1.
    solo = FaceRecognizer(export_dir, threshold=-1.0)
    for person in range(3):
        solo.enroll(f"q{person}", [images[labels == person][0]], aligned=True)
    for person in (2, 0, 1):
        found = solo.identify(images[labels == person][0], aligned=True)[0]
        assert found["identity"] == f"q{person}" and found["similarity"] == pytest.approx(1.0, abs=1e-5)
        assert found["candidates"][1]["similarity"] < 1.0 - 1e-4
    # A person enrolled from one image is found with similarity 1 by that same image.
    recognizer.enroll("single", [images[-1]], aligned=True)
    best = recognizer.identify(images[-1], aligned=True)[0]
    assert best["identity"] == "single" and best["similarity"] == pytest.approx(1.0, abs=1e-5)
    recognizer.threshold = 1.01
    assert recognizer.identify(images[-1], aligned=True)[0]["identity"] == "unknown"
    same = recognizer.verify(images[0], images[0], aligned=True)
    assert same["similarity"] == pytest.approx(1.0, abs=1e-5) and not same["same"]  # threshold 1.01
    recognizer.threshold = 0.5
    assert recognizer.verify(images[0], images[0], aligned=True)["same"]


def test_masked_queries_get_mask_status(export_dir, faces):
    try:
        from mtarcface_tf.data import MaskAugmenter
    except (ImportError, AttributeError):
        pytest.skip("mtarcface_tf.data.MaskAugmenter is not available")
    images, labels = faces
    masked, mask_labels = MaskAugmenter(probability=1.0, seed=0)(images[:3])
    masked = np.asarray(masked)
    assert np.all(np.asarray(mask_labels) == 1) and not np.array_equal(masked, images[:3])
    recognizer = FaceRecognizer(export_dir, threshold=-1.0)
    recognizer.enroll("p0", list(images[labels == 0]), aligned=True)
    recognizer.enroll("p1", list(images[labels == 1]), aligned=True)
    # The expected answer, computed here with numpy from the raw embeddings: the nearest mean template.
    query, _ = recognizer.embed(masked[:1])
    templates = []
    for person in (0, 1):
        enrolled, _ = recognizer.embed(images[labels == person])
        mean = (enrolled / np.linalg.norm(enrolled, axis=1, keepdims=True)).mean(axis=0)
        templates.append(mean / np.linalg.norm(mean))
    cosines = np.asarray(templates) @ (query[0] / np.linalg.norm(query[0]))
    expected = f"p{int(np.argmax(cosines))}"
    result = recognizer.identify(masked[0], aligned=True)[0]
    assert result["identity"] == expected and result["similarity"] == pytest.approx(cosines.max(), abs=1e-5)
    assert result["candidates"][1]["similarity"] == pytest.approx(cosines.min(), abs=1e-5)
    assert 0.0 <= result["mask"]["probability"] <= 1.0
    recognizer.threshold = float(cosines.max()) + 1e-3      # just above the best match: unknown
    assert recognizer.identify(masked[0], aligned=True)[0]["identity"] == "unknown"
    recognizer.threshold = float(cosines.max()) - 1e-3      # just below: the nearest person
    assert recognizer.identify(masked[0], aligned=True)[0]["identity"] == expected
    verdict = recognizer.verify(masked[0], images[1], aligned=True)
    assert verdict["mask_a"]["status"] in ("mask", "no_mask") and -1.0 <= verdict["similarity"] <= 1.0


def test_detection_path_largest_face_all_faces_and_no_face(export_dir, faces, tmp_path):
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[10:74, 10:74] = np.kron(faces[0][0], np.ones((2, 2, 1), np.uint8))
    big, small = ([10, 10, 74, 74], 2.0), ([100, 60, 132, 92], 1.0)
    recognizer = FaceRecognizer(export_dir, detector=FakeDetector([small, big]), threshold=-1.0)
    recognizer.enroll("p0", [faces[0][0]], aligned=True)
    crops = recognizer.faces(photo)
    assert len(crops) == 1 and "2 faces found" in crops[0].note
    np.testing.assert_array_equal(crops[0].box, big[0])
    # The template-aligned crop of the 2x enlarged face is the original face again (up to interpolation).
    assert np.mean(np.abs(crops[0].crop.astype(int) - faces[0][0].astype(int))) < 12
    results = recognizer.identify(photo, all_faces=True)
    assert len(results) == 2 and all(r["note"] == "" for r in results)
    assert annotate(photo, results).shape == photo.shape
    recognizer_none = FaceRecognizer(export_dir, detector=FakeDetector([]))
    path = tmp_path / "empty.png"
    import cv2
    cv2.imwrite(str(path), photo)
    with pytest.raises(NoFaceError, match="empty.png: no face found"):
        recognizer_none.faces(str(path))
    with pytest.raises(detect.ImageReadError, match="missing.jpg"):
        recognizer_none.faces(str(tmp_path / "missing.jpg"))


def test_bad_model_path_and_empty_gallery(export_dir, tmp_path, faces):
    with pytest.raises(ModelLoadError, match="not a SavedModel"):
        FaceRecognizer(str(tmp_path / "nothing_here"))
    with pytest.raises(ModelLoadError, match="not_a_model"):
        os.makedirs(tmp_path / "not_a_model")
        FaceRecognizer(str(tmp_path / "not_a_model"))
    with pytest.raises(EmptyGalleryError, match="enroll"):
        FaceRecognizer(export_dir).identify(faces[0][0], aligned=True)


def test_recognizer_loads_a_training_workdir(tmp_path, faces):
    model, config = tiny.build_tiny_model(input_size=SIZE)
    workdir = tiny.save_workdir(model, config, tmp_path / "run", threshold={"cosine_similarity": 0.25})
    recognizer = FaceRecognizer(workdir)
    assert recognizer.threshold == pytest.approx(0.25)
    embeddings, _ = recognizer.embed(faces[0][:2])
    np.testing.assert_allclose(embeddings, tiny.keras_reference(model, faces[0][:2])["embedding"],
                               atol=1e-5)


def test_gallery_save_load(tmp_path):
    rng = np.random.default_rng(0)
    gallery = Gallery(use_svm=True)
    gallery.add("ann", rng.normal(size=(3, 8)))
    gallery.add("bob", rng.normal(size=(2, 8)) + 3)
    gallery.add("ann", rng.normal(size=(1, 8)))
    np.testing.assert_array_equal(gallery.counts, [4, 2])
    templates = gallery.templates
    path = gallery.save(tmp_path / "g")
    gallery.close()
    files = sorted(os.listdir(path))      # the index's vectors in one vector file beside it
    assert files[:2] == ["gallery.db", "index.npz"] and files[3:] == ["writer.lock"]
    assert files[2].startswith("vectors-") and files[2].endswith(".bin")
    loaded = Gallery.open(path, writable=True)
    assert loaded.names == ["ann", "bob"] and loaded.use_svm
    np.testing.assert_allclose(loaded.templates, templates, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(loaded.templates, axis=1), 1.0, atol=1e-6)
    name, probability = loaded.svm_predict(templates[1:])[0]
    assert name == "bob" and 0.0 <= probability <= 1.0
    indices, scores = loaded.search(templates, top_k=5)
    assert indices.shape == (2, 2) and list(indices[:, 0]) == [0, 1]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    loaded.remove("ann")
    assert loaded.names == ["bob"] and loaded.svm_predict(templates) is None
    with pytest.raises(GalleryError, match="not in the gallery"):
        loaded.remove("ann")
    with pytest.raises(GalleryError, match="size 4"):
        loaded.add("cy", np.ones((1, 4)))
    with pytest.raises(EmptyGalleryError):
        Gallery().search(np.ones((1, 8)))
    with Gallery.open(tmp_path / "new", writable=True) as new:     # a new, empty gallery writes to its folder
        new.add("dee", np.ones((1, 8)))
        assert new.path == str(tmp_path / "new")
    assert Gallery.open(tmp_path / "new").names == ["dee"]


def _legacy_npz(path, people):
    """A gallery file of the earlier format, written as its writer did (float arrays + JSON names, no pickle)."""
    names = list(people)
    samples = np.concatenate([people[name] for name in names]).astype(np.float32)
    samples /= np.linalg.norm(samples, axis=1, keepdims=True)
    meta = {"format": 1, "names": names, "use_svm": False, "embedding_size": samples.shape[1]}
    np.savez(path, meta=np.array(json.dumps(meta)), counts=np.array([len(people[n]) for n in names]),
             templates=np.zeros((len(names), samples.shape[1]), np.float32), samples=samples)


def test_npz_gallery_opens_and_is_converted_on_first_write(tmp_path, capsys):
    rng = np.random.default_rng(1)
    people = {"ann": rng.normal(size=(2, 8)), "bob": rng.normal(size=(3, 8))}
    _legacy_npz(tmp_path / "old.npz", people)
    before = (tmp_path / "old.npz").read_bytes()
    opened = Gallery.open(tmp_path / "old.npz", writable=True)
    assert opened.names == ["ann", "bob"] and opened.path is None     # read into memory, nothing written yet
    mean = people["bob"] / np.linalg.norm(people["bob"], axis=1, keepdims=True)
    mean = mean.mean(axis=0)
    np.testing.assert_allclose(opened.templates[1], mean / np.linalg.norm(mean), atol=1e-6)
    opened.add("cy", rng.normal(size=(1, 8)))
    opened.close()
    assert "converted" in capsys.readouterr().out
    assert (tmp_path / "old.npz").read_bytes() == before                # the old file is kept
    again = Gallery.open(tmp_path / "old.npz")                         # now names the converted folder
    assert again.path == str(tmp_path / "old") and again.names == ["ann", "bob", "cy"]


def test_gallery_rejects_pickles_and_junk(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"names": ["x"]}], dtype=object), counts=np.ones(1), samples=np.ones((1, 2)))
    with pytest.raises(GalleryError, match="pickled.npz: not a gallery file"):
        Gallery.load(pickled)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(GalleryError, match="junk.npz"):
        Gallery.load(junk)
    with pytest.raises(GalleryError, match="no such gallery"):
        Gallery.load(tmp_path / "missing.npz")


def test_mask_aware_thresholds_and_their_reasons():
    by_condition = {"clean": {"cosine_similarity": 0.35, "far_target": 1e-3},
                    "masked": {"cosine_similarity": 0.25, "far_target": 1e-3}}
    metadata = {"recommended_threshold": {"cosine_similarity": 0.3, "by_condition": by_condition}}
    thresholds = condition_thresholds(metadata)
    assert thresholds["clean"][0] == 0.35 and "clean pairs" in thresholds["clean"][1]
    assert thresholds["masked"][0] == 0.25 and "mixed" in thresholds["masked"][1]
    single = condition_thresholds({"recommended_threshold": {"cosine_similarity": 0.3}})
    assert single["masked"][0] == single["clean"][0] == 0.3 and "one for every condition" in single["masked"][1]
    assert condition_thresholds(metadata, 0.5)["masked"] == (0.5, "the threshold given by the caller (--threshold)")
    # identify_embeddings applies the threshold of each probe's condition: one query, similarity 0.3 to "ann",
    # is accepted as a masked probe (0.3 >= 0.25) and refused as a clean one (0.3 < 0.35).
    recognizer = FaceRecognizer.__new__(FaceRecognizer)
    recognizer.thresholds = thresholds
    recognizer.gallery = Gallery()
    recognizer.gallery.add("ann", np.array([[1.0, 0.0]]))
    query = np.array([[0.3, np.sqrt(1 - 0.09)]] * 2, np.float32)
    masked, clean = recognizer.identify_embeddings(query, np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), top_k=1)
    assert masked["identity"] == "ann" and masked["threshold"] == 0.25
    assert "P(mask) = 0.90" in masked["threshold_reason"]
    assert clean["identity"] == "unknown" and clean["threshold"] == 0.35
