"""IJB-B/C 1:1 verification: mtarcface_tf.eval.ijb against a loop transcription of insightface's eval_ijbc.py
(tests/support/ijb_reference.py), on random features and end to end on a generated SynthFaces IJB set."""
import json

import numpy as np
import pytest

from mtarcface_tf.data import ijb_synth
from mtarcface_tf.data.masked_pairs import mask_all
from mtarcface_tf.eval import ijb
from mtarcface_tf.faces.align import align_face
from tests.support import ijb_reference as ref
from tests.support import processes, tiny

SEED = 3


def _random_set(rng, faces=400, templates=60, media=150, pairs=500, dim=8):
    templates_of = rng.integers(1, templates + 1, faces) * 3   # sparse ids: the lookup must not assume 0..T-1
    media_of = rng.integers(1, media + 1, faces)
    present = np.unique(templates_of)
    pair_ids = rng.choice(present, (pairs, 2))
    return dict(features=rng.normal(size=(faces, 2 * dim)).astype(np.float32),
                scores=rng.uniform(0.3, 1, faces).astype(np.float32), templates=templates_of, medias=media_of,
                pairs=pair_ids, labels=rng.integers(0, 2, pairs))


@pytest.mark.parametrize("norm_score,detector_score", [(True, True), (False, True), (True, False)])
def test_pooling_scores_and_table_equal_the_loop_transcription(norm_score, detector_score):
    data = _random_set(np.random.default_rng(0))
    dim = data["features"].shape[1] // 2
    meta = dict(templates=data["templates"], medias=data["medias"], pairs=data["pairs"], labels=data["labels"],
                scores=data["scores"])
    flip_sum = data["features"][:, :dim] + data["features"][:, dim:]
    ours = ijb.evaluate_features(meta, flip_sum, norm_score=norm_score, detector_score=detector_score)["clean"]
    feats = ref.combine(data["features"], data["scores"], True, norm_score, detector_score)
    template_feats, unique = ref.image2template_feature(feats, data["templates"], data["medias"])
    scores = ref.verification(template_feats, template_feats, unique, data["pairs"][:, 0], data["pairs"][:, 1])
    np.testing.assert_array_equal(ours["scores"], scores)
    assert list(ours["tar"].values()) == ref.tpr_fpr_row(data["labels"], scores)


def test_large_media_are_summed_in_file_order():
    # IJB-like: each media in one template, hundreds of faces per media listed in mixed order; float32 sums of 3+
    # terms depend on their order, so a pooling that does not keep file order inside a media differs in bits.
    rng = np.random.default_rng(2)
    template_of_media = rng.integers(1, 5, 21)
    medias = rng.integers(1, 21, 4000)
    feats = rng.normal(size=(4000, 8)).astype(np.float32) * rng.uniform(0.1, 10, (4000, 1)).astype(np.float32)
    ours, _ = ijb.template_features(feats, template_of_media[medias], medias)
    expected, _ = ref.image2template_feature(feats, template_of_media[medias], medias)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("offset,scale", [(0, 2 ** 40), (-7, 1)])
def test_huge_or_negative_ids_equal_the_loop_transcription(offset, scale):
    # Ids too wide for the lookup table and the sort key (or negative): the binary-search and rank paths.
    data = _random_set(np.random.default_rng(1))
    templates, medias = data["templates"] * scale + offset, data["medias"] * scale + offset
    pairs = data["pairs"] * scale + offset
    feats = ref.combine(data["features"], data["scores"])
    ours, unique = ijb.template_features(feats, templates, medias)
    np.testing.assert_array_equal(unique, np.unique(templates))
    expected, _ = ref.image2template_feature(feats, templates, medias)
    np.testing.assert_array_equal(ours, expected)
    # The script's template2id table cannot hold such ids; its scores are those of the plain ids.
    plain, plain_unique = ref.image2template_feature(feats, data["templates"], data["medias"])
    expected_scores = ref.verification(plain, plain, plain_unique, data["pairs"][:, 0], data["pairs"][:, 1])
    np.testing.assert_array_equal(ijb.pair_scores(ours, ours, unique, pairs), expected_scores)


def test_table_takes_the_nearest_fpr_and_the_largest_tpr_among_ties():
    # Scores with ties: several ROC points share an FPR; the table must take the one with the largest TPR.
    labels = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1, 0] * 30)
    scores = np.round(np.random.default_rng(1).uniform(size=labels.size), 1)
    assert list(ijb.tar_at_far(labels, scores)["tar"].values()) == ref.tpr_fpr_row(labels, scores)


@pytest.mark.parametrize("decimals", [1, 3, None])
def test_roc_equals_sklearn_bit_for_bit(decimals):
    from sklearn.metrics import roc_curve
    rng = np.random.default_rng(decimals or 0)
    labels = rng.integers(0, 2, 5000)
    scores = rng.normal(size=labels.size) + labels
    scores = np.round(scores, decimals) if decimals else scores   # many ties, some ties, none
    fpr, tpr, _ = roc_curve(labels, scores)
    ours = ijb.roc(labels, scores)
    np.testing.assert_array_equal(ours[0], fpr)
    np.testing.assert_array_equal(ours[1], tpr)
    assert list(ijb.tar_at_far(labels, scores)["tar"].values()) == ref.tpr_fpr_row(labels, scores)


@pytest.mark.parametrize("negatives,tied", [(130, 12), (100, 0)])
def test_table_takes_the_larger_fpr_when_both_neighbours_are_equally_near(negatives, tied):
    # Positives and negatives alternate (every point a corner); negatives tied and tied + 1 share a score, so the ROC
    # jumps from FPR tied/N to (tied + 2)/N, points that are (in float64) equally far from 1e-1 (N=130) or 1e-2.
    positive_scores = 2.0 * negatives - 2 * np.arange(negatives)
    negative_scores = positive_scores - 1
    negative_scores[tied + 1] = negative_scores[tied]
    labels = np.r_[np.ones(negatives, int), np.zeros(negatives, int)]
    scores = np.r_[positive_scores, negative_scores]
    fpr = ijb.roc(labels, scores)[0]
    assert tied / negatives in fpr and (tied + 2) / negatives in fpr and (tied + 1) / negatives not in fpr
    assert list(ijb.tar_at_far(labels, scores)["tar"].values()) == ref.tpr_fpr_row(labels, scores)



@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijb") / "IJBC"
    info = ijb_synth.generate_ijb(root, "IJBC", identities=4, templates_per_identity=2, media_per_template=2,
                                  max_faces_per_media=3, impostors_per_template=3, seed=SEED)
    return str(root), info


def test_generated_set_is_consistent(synth_set):
    root, info = synth_set
    meta = ijb.read_ijb(root, "IJBC")
    assert len(meta["images"]) == info["faces"] and len(meta["pairs"]) == info["pairs"]
    assert 0 < meta["labels"].sum() < len(meta["labels"])
    per_template = [len(np.unique(meta["medias"][meta["templates"] == t])) for t in np.unique(meta["templates"])]
    assert min(per_template) == 2
    assert np.all((meta["scores"] >= 0.6) & (meta["scores"] <= 1.0))
    assert np.bincount(meta["medias"]).max() > 1   # some media pool several faces


def test_generated_landmarks_align_the_loose_crop_back_onto_the_face(synth_set):
    from mtarcface_tf.data import synthetic
    root, _ = synth_set
    meta = ijb.read_ijb(root, "IJBC")
    aligned = ijb.load_aligned(root, meta, [0])[0].astype(np.float32)
    face, landmarks = synthetic.render_face(synthetic.identity_params(SEED, 0), synthetic.image_rng(SEED, 0, 0))
    expected = align_face(face, landmarks).astype(np.float32)   # the face itself aligned by its own landmarks
    inner = (slice(20, 100), slice(20, 92))
    assert np.mean(np.abs(aligned[inner] - expected[inner])) < 6
    other = ijb.load_aligned(root, meta, [len(meta["images"]) - 1])[0].astype(np.float32)
    assert np.mean(np.abs(other[inner] - expected[inner])) > 25


def _reference_protocols(root, embed, seed):
    templates, medias, p1, p2, label, files = ref.read_lists(root, "IJBC")
    feats, scores = ref.get_image_feature(root, files, embed)
    clean = ref.combine(feats, scores)
    reference, unique = ref.image2template_feature(clean, templates, medias)
    probe_faces = np.flatnonzero(np.isin(templates, np.unique(p2)))
    masked_feats, _ = ref.get_image_feature(root, [files[i] for i in probe_faces], embed,
                                            mask=lambda faces: mask_all(faces, seed))
    mixed = clean.copy()
    mixed[probe_faces] = ref.combine(masked_feats, scores[probe_faces])
    probe, _ = ref.image2template_feature(mixed, templates, medias)
    rows = {}
    for protocol, probe_feats in (("clean", reference), ("masked", probe)):
        rows[protocol] = ref.tpr_fpr_row(label, ref.verification(reference, probe_feats, unique, p1, p2))
    return rows


def test_evaluator_equals_the_transcription_end_to_end(synth_set):
    root, _ = synth_set
    embed = tiny.projection_embed()
    evaluator = ijb.IJBEvaluator(root, "IJBC", masked=True, batch_size=8, seed=1)
    metrics = dict(evaluator.run(embed))
    expected = _reference_protocols(root, embed, seed=1)
    for protocol in ("clean", "masked"):
        assert list(evaluator.results["IJBC"]["protocols"][protocol]["tar"].values()) == expected[protocol]
    assert metrics["IJBC/masked/tar@far=1e-04"] == expected["masked"][2]
    assert expected["clean"] != expected["masked"]


def test_face_lists_in_another_order_are_refused(synth_set, tmp_path):
    import shutil
    root, _ = synth_set
    copy = tmp_path / "IJBC"
    shutil.copytree(root, copy)
    points = copy / "meta" / "ijbc_name_5pts_score.txt"
    lines = points.read_text().splitlines()
    points.write_text("\n".join(lines[1:] + lines[:1]) + "\n")
    with pytest.raises(ijb.IJBDataError, match="same images in the same order"):
        ijb.read_ijb(copy, "IJBC")


def test_pairs_of_one_kind_are_refused(synth_set, tmp_path):
    import shutil
    root, _ = synth_set
    copy = tmp_path / "IJBC"
    shutil.copytree(root, copy)
    pairs = copy / "meta" / "ijbc_template_pair_label.txt"
    pairs.write_text("".join(" ".join(line.split()[:2] + ["1"]) + "\n" for line in pairs.read_text().splitlines()))
    with pytest.raises(ijb.IJBDataError, match="ijbc_template_pair_label.txt: the labels"):
        ijb.read_ijb(copy, "IJBC")


def test_missing_meta_file_is_one_clear_error(tmp_path):
    with pytest.raises(ijb.IJBDataError, match="ijbb_face_tid_mid.txt: not found"):
        ijb.read_ijb(tmp_path, "IJBB")


@pytest.mark.slow   # slow tier: tools/evaluate.py in a fresh process (the evaluator itself is tested above)
def test_evaluate_tool_prints_clean_and_masked_tar_equal_to_the_transcription(synth_set, tmp_path):
    root, _ = synth_set
    model, config = tiny.build_tiny_model(input_size=112)
    workdir = tiny.save_workdir(model, config, tmp_path / "run")
    result = processes.run_python(["tools/evaluate.py", f"--workdir={workdir}", f"--ijb={root}",
                                       "--ijb_name=IJBC", f"--output_dir={tmp_path / 'report'}", "--batch_size=16"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IJBC" in result.stdout and "masked" in result.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    from mtarcface_tf.export.embedder import make_embed_fn
    expected = _reference_protocols(root, lambda faces: make_embed_fn(model)(faces)[0], seed=0)
    for protocol in ("clean", "masked"):
        got = [report["ijb"]["IJBC"]["protocols"][protocol]["tar"][f"{far:.0e}"] for far in ref.X_LABELS]
        assert got == pytest.approx(expected[protocol], abs=0)
