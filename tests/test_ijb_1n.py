"""IJB-B/C 1:N identification: mtarcface_tf.eval.ijb_1n against a loop transcription of insightface's ijb_1n.py
(tests/support/ijb_1n_reference.py) on random features and end to end on a generated SynthFaces IJB set; NIST's open-set
FNIR/FPIR against a hand-computed example; exact against ANN search; masked probes; bad lists."""
import json
import shutil

import numpy as np
import pytest

from tests.support import ijb_1n_reference as ref1n
from tests.support import ijb_reference as ref
from tests.support import processes, tiny
from mtarcface_tf.data import ijb_synth
from mtarcface_tf.data.masked_pairs import mask_all
from mtarcface_tf.eval import ijb, ijb_1n

SEED = 5


def _unit(rows):
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def _probe_set(rng, gallery=200, probes=300, dim=16, noise=1.2):
    """Unit gallery rows, probes near their mate's row (mates int [Q])."""
    centres = _unit(rng.normal(size=(gallery, dim)))
    mates = rng.integers(0, gallery, probes)
    return centres, _unit(centres[mates] + noise * rng.normal(size=(probes, dim)) / np.sqrt(dim)), mates


@pytest.mark.parametrize("seed,gallery,probes,noise", [(0, 200, 300, 1.2), (1, 40, 500, 2.0), (2, 7, 90, 0.8)])
def test_closed_set_equals_the_loop_transcription(seed, gallery, probes, noise):
    centres, queries, mates = _probe_set(np.random.default_rng(seed), gallery, probes, noise=noise)
    expected = ref1n.evaluation(queries, centres, list(mates))
    ours = ijb_1n.closed_set(ijb_1n.GallerySearch(centres), gallery, queries, mates)
    assert [ours["top"][rank] for rank in (1, 5, 10)] == [expected["top1"], expected["top5"], expected["top10"]]
    assert 0 < expected["top1"] < 1
    for far in ref1n.FARS:
        assert ours["tpir"][far] == expected[far][0]
        assert ours["threshold"][far] == pytest.approx(expected[far][1], abs=1e-6)


def test_deepening_finds_the_kth_negative_beyond_the_first_candidates():
    # Depth 1 returns one candidate per probe: the 0.1 * Q-th largest negative lies deeper for many probes.
    centres, queries, mates = _probe_set(np.random.default_rng(3), 60, 400, noise=2.5)
    expected = ref1n.evaluation(queries, centres, list(mates))
    ours = ijb_1n.closed_set(ijb_1n.GallerySearch(centres), 60, queries, mates, ranks=(1,), depth=1)
    assert ours["searches"] > 1
    for far in ref1n.FARS:
        assert ours["tpir"][far] == expected[far][0]
        assert ours["threshold"][far] == pytest.approx(expected[far][1], abs=1e-6)


def _hand_probe(scores):
    """A unit probe whose cosines with the basis gallery e1, e2, e3 are ``scores``."""
    return np.r_[scores, np.sqrt(1.0 - np.sum(np.square(scores)))]


def test_open_set_fnir_and_fpir_on_a_hand_computed_example():
    gallery = np.eye(4)[:3]
    impostors = [_hand_probe([t, 0, 0]) for t in (0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0)]
    mated = [_hand_probe(s) for s in ([0.6, 0, 0], [0, 0.42, 0], [0.55, 0, 0.43], [0.4, 0, 0], [0, 0.1, 0])]
    probes = np.array(impostors + mated)
    mates = np.r_[np.full(10, -1), [0, 1, 2, 0, 1]]
    # FPIR 0.1 of 10 non-mated searches: one may score above T, so T = the 2nd largest top score, 0.4 (0.45 > T).
    # Mates above 0.4: 0.6, 0.42, 0.43 (second in its list) -> FNIR 2/5; 0.4 itself is not above. FPIR 0.01: no
    # false positive allowed, T = 0.45, only 0.6 passes -> FNIR 4/5.
    result = ijb_1n.open_set(ijb_1n.GallerySearch(gallery), 3, probes, mates)
    assert result["threshold"] == pytest.approx({0.01: 0.45, 0.1: 0.4})
    assert result["fpir"] == {0.01: 0.0, 0.1: 0.1}
    assert result["fnir"] == pytest.approx({0.01: 0.8, 0.1: 0.4})
    assert (result["mated"], result["non_mated"], result["rank1"]) == (5, 10, pytest.approx(0.8))
    # A candidate list of one: the mate in second place is no longer returned.
    assert ijb_1n.open_set(ijb_1n.GallerySearch(gallery), 3, probes, mates, candidates=1)["fnir"][0.1] == \
        pytest.approx(0.6)


@pytest.mark.parametrize("backend", ["faiss-ivf", "usearch"])   # the index's default, and HNSW
def test_exact_and_ann_search_agree_within_a_tenth_of_a_point(backend):
    # IJB-like difficulty: a probe's cosine with its mate is about 0.55. faiss IVF at nprobe 32 (the index's
    # earlier default) was 11 points lower in top-1 here. One thread: a multi-threaded HNSW build differs from run
    # to run (up to 0.6 point here).
    rng = np.random.default_rng(7)
    centres, queries, mates = _probe_set(rng, gallery=4000, probes=3000, dim=64, noise=1.5)
    split = np.arange(4000) < 2000
    galleries = {"G1": (centres[split], np.arange(2000)), "G2": (centres[~split], np.arange(2000, 4000))}
    exact = ijb_1n.identify(galleries, queries, mates, "exact")
    ann = ijb_1n.identify(galleries, queries, mates, "ann", dict(backend=backend, threads=1))
    pairs = [(exact["closed"]["top"], ann["closed"]["top"]), (exact["closed"]["tpir"], ann["closed"]["tpir"])]
    pairs += [(exact["open"][p]["fnir"], ann["open"][p]["fnir"]) for p in galleries]
    for ours, theirs in pairs:
        for key in ours:
            assert abs(ours[key] - theirs[key]) <= 1e-3, (key, ours[key], theirs[key])
    assert 0.05 < exact["closed"]["top"][1] < 0.95



@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijb1n") / "IJBC"
    info = ijb_synth.generate_ijb(root, "IJBC", identities=8, templates_per_identity=3, media_per_template=2,
                                  max_faces_per_media=2, impostors_per_template=2, seed=SEED)
    return str(root), info


def test_generated_lists_split_the_identities_between_two_galleries(synth_set):
    root, info = synth_set
    lists = ijb_1n.read_lists(root, "IJBC")
    (g1, s1), (g2, s2) = lists["galleries"]["G1"], lists["galleries"]["G2"]
    assert len(g1) == len(g2) == 4 and not np.intersect1d(s1, s2).size
    assert len(lists["probes"][0]) == info["probes"] == 16
    assert set(lists["probes"][1]) == set(s1) | set(s2)


def _reference_1n(root, embed, seed):
    templates, medias, _, _, _, files = ref.read_lists(root, "IJBC")
    feats, scores = ref.get_image_feature(root, files, embed)
    clean = ref.combine(feats, scores)
    meta = f"{root}/meta/ijbc_1N_"
    galleries, probe_list = [f"{meta}gallery_G1.csv", f"{meta}gallery_G2.csv"], f"{meta}probe_mixed.csv"
    probe_faces = np.flatnonzero(np.isin(templates, ref1n.read_template_subject_id_list(probe_list)[0]))
    masked_feats, _ = ref.get_image_feature(root, [files[i] for i in probe_faces], embed,
                                            mask=lambda faces: mask_all(faces, seed))
    mixed = clean.copy()
    mixed[probe_faces] = ref.combine(masked_feats, scores[probe_faces])
    return {protocol: ref1n.run_1n(feats_, templates, medias, galleries, probe_list)
            for protocol, feats_ in (("clean", clean), ("masked", mixed))}


def test_evaluator_equals_the_transcription_and_masks_only_the_probes(synth_set):
    root, _ = synth_set
    seen = []
    evaluator = ijb_1n.IJB1NEvaluator(root, "IJBC", masked=True, batch_size=64, seed=2)
    metrics = dict(evaluator.run(tiny.projection_embed(seen=seen)))
    expected = _reference_1n(root, tiny.projection_embed(), seed=2)
    for protocol in ("clean", "masked"):
        closed = evaluator.results["IJBC"]["protocols"][protocol]["closed"]
        assert [closed["top"][r] for r in (1, 5, 10)] == [expected[protocol][f"top{r}"] for r in (1, 5, 10)]
        assert [closed["tpir"][f] for f in ref1n.FARS] == [expected[protocol][f][0] for f in ref1n.FARS]
    assert metrics["IJBC/1N/masked/top1"] == expected["masked"]["top1"]
    assert expected["clean"] != expected["masked"]
    # Calls: gallery faces, probe faces, the same probe faces masked (each batch: faces, then their mirrors).
    meta, lists = ijb.read_faces(root, "IJBC"), ijb_1n.read_lists(root, "IJBC")
    gallery_faces, probe_faces = ijb_1n.used_faces(meta, lists)
    gallery, clean, masked = (batch[:len(batch) // 2] for batch in seen)
    assert (len(gallery), len(clean), len(masked)) == (len(gallery_faces), len(probe_faces), len(probe_faces))
    lower, upper = np.abs(masked.astype(int) - clean)[:, 70:], np.abs(masked.astype(int) - clean)[:, :40]
    assert lower.mean() > 20 and upper.mean() < 2
    assert np.array_equal(gallery, ijb.load_aligned(root, meta, gallery_faces))


def _copy(root, tmp_path):
    copy = tmp_path / "IJBC"
    shutil.copytree(root, copy)
    return copy


@pytest.mark.parametrize("edit,message", [
    (lambda lines: lines[:2] + ["12,x,a.jpg,1"] + lines[3:], r"ijbc_1N_gallery_G1.csv: line 3 is '12,x,a.jpg,1'"),
    (lambda lines: lines + [lines[1].replace(",1,", ",99,", 1)], "is listed with two subjects"),
    (lambda lines: lines[:1], "no rows after the header"),
])
def test_bad_gallery_lists_are_one_clear_error(synth_set, tmp_path, edit, message):
    copy = _copy(synth_set[0], tmp_path)
    path = copy / "meta" / "ijbc_1N_gallery_G1.csv"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises(ijb.IJBDataError, match=message):
        ijb_1n.read_lists(copy, "IJBC")


def test_probe_subject_in_no_gallery_and_missing_lists_are_refused(synth_set, tmp_path):
    copy = _copy(synth_set[0], tmp_path)
    path = copy / "meta" / "ijbc_1N_probe_mixed.csv"
    path.write_text(path.read_text() + "999,4242,x.jpg,1\n")
    with pytest.raises(ijb.IJBDataError, match="subject 4242 is in no gallery list"):
        ijb_1n.read_lists(copy, "IJBC")
    path.unlink()
    with pytest.raises(ijb.IJBDataError, match="ijbc_1N_probe_mixed.csv: not found.*--noijb_1n"):
        ijb_1n.read_lists(copy, "IJBC")


@pytest.mark.slow   # slow tier: tools/evaluate.py in a fresh process (the evaluator itself is tested above)
def test_evaluate_tool_reports_1n_and_a_bad_list_in_one_line(synth_set, tmp_path):
    root, _ = synth_set
    model, config = tiny.build_tiny_model(input_size=112)
    workdir = tiny.save_workdir(model, config, tmp_path / "run")
    result = processes.run_python(["tools/evaluate.py", f"--workdir={workdir}", f"--ijb={root}",
                                       f"--output_dir={tmp_path / 'report'}", "--batch_size=32", "--no_masked"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TPIR" in result.stdout and "G2 FNIR" in result.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    closed = report["ijb_1n"]["IJBC"]["protocols"]["clean"]["closed"]
    assert set(closed["top"]) == {"1", "5", "10"} and 0 <= closed["tpir"]["1e-01"] <= 1
    assert (tmp_path / "report" / report["ijb_1n"]["IJBC"]["plots"]["cmc"]).is_file()
    copy = _copy(root, tmp_path)
    (copy / "meta" / "ijbc_1N_gallery_G2.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n7;8\n")
    result = processes.run_python(["tools/evaluate.py", f"--workdir={workdir}", f"--ijb={copy}",
                                       f"--output_dir={tmp_path / 'report2'}", "--no_masked"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "ijbc_1N_gallery_G2.csv: line 2" in \
        result.stderr
