"""Report files, tables and plots from synthetic evaluation results (no model needed)."""
import json
import os

import numpy as np
import pytest

from mtarcface_tf.eval import report
from mtarcface_tf.eval.evaluator import mask_labels
from mtarcface_tf.eval.mask_usage import mask_usage_metrics
from mtarcface_tf.eval.verification import evaluate


def _variant(seed, noise, variant, pairs=200, flip=True):
    """One variant's evaluation; the flip-test embeddings have half the noise, so their scores differ visibly."""
    rng = np.random.default_rng(seed)
    issame = np.arange(pairs) % 2 == 0
    first = rng.normal(size=(pairs, 16))
    partner = np.where(issame[:, None], first, rng.normal(size=(pairs, 16)))
    noise_draw = rng.normal(size=(pairs, 16))
    labels = mask_labels(variant, 2 * pairs)
    mask_prob = np.stack([1 - labels, labels], 1) * 0.8 + 0.1
    mask_prob[:3] = mask_prob[:3, ::-1]                 # three wrong mask predictions
    return dict(plain=evaluate(first, partner + noise * noise_draw, issame),
                flip=evaluate(first, partner + 0.5 * noise * noise_draw, issame) if flip else None,
                issame=issame, mask_prob=mask_prob, mask_labels=labels)


def _results(noises=(0.5, 1.0, 0.8), flip=True):
    results = {}
    for name, seed in (("lfw", 0), ("cfp_fp", 10)):
        variants = {v: _variant(seed + i, n, v, flip=flip) for i, (v, n) in enumerate(zip(("clean", "masked",
                                                                                            "mixed"), noises))}
        usage = mask_usage_metrics(np.concatenate([r["mask_prob"] for r in variants.values()]),
                                   np.concatenate([r["mask_labels"] for r in variants.values()]))
        results[name] = dict(path=f"/data/{name}.bin", pairs=200, variants=variants, mask_usage=usage)
    return results


def test_write_report_files(tmp_path):
    out = tmp_path / "report"
    written = report.write_report(_results(), str(out), far=1e-2, model_name="mtarcface")
    for name in ("report.md", "report.json", "roc_lfw.png", "distances_lfw.png", "mask_confusion_lfw.png",
                 "roc_cfp_fp.png", "distances_cfp_fp.png", "mask_confusion_cfp_fp.png"):
        assert os.path.getsize(out / name) > 0, name
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    loaded = report.load_report(str(out / "report.json"))
    assert loaded == json.loads(json.dumps(written))
    assert set(report.REPORT_KEYS) <= set(loaded)
    clean = loaded["sets"]["lfw"]["variants"]["clean"]
    assert {"plain", "flip", "histogram_iou"} <= set(clean)
    assert clean["plain"]["accuracy"] > loaded["sets"]["lfw"]["variants"]["masked"]["plain"]["accuracy"]
    assert loaded["sets"]["lfw"]["mask_usage"]["confusion_matrix"] == [[600 - 4, 4], [5, 600 - 5]]  # 3 wrong a variant
    assert loaded["sets"]["lfw"]["variants"]["masked"]["flip"]["accuracy"] > \
        loaded["sets"]["lfw"]["variants"]["masked"]["plain"]["accuracy"] + 0.02
    rec = loaded["recommended_threshold"]
    assert rec["far_target"] == 1e-2 and 0 < rec["squared_distance"] < 4
    assert rec["cosine_similarity"] == pytest.approx(1 - rec["squared_distance"] / 2)
    assert rec["pairs"] == 2 * 3 * 200
    # One threshold per probe condition: clean pairs for a clean probe, mixed pairs for a masked one; each keeps
    # its own pairs' false accepts at the target (counted here with numpy on those pairs alone).
    results = _results()
    for condition, variant in (("clean", "clean"), ("masked", "mixed")):
        entry = rec["by_condition"][condition]
        assert entry["source"] == [f"cfp_fp/{variant}", f"lfw/{variant}"] and entry["pairs"] == 2 * 200
        dist = np.concatenate([results[s]["variants"][variant]["plain"]["distances"] for s in ("lfw", "cfp_fp")])
        same = np.concatenate([results[s]["variants"][variant]["issame"] for s in ("lfw", "cfp_fp")])
        assert np.mean(dist[~same] < entry["squared_distance"]) <= 1e-2
    assert rec["by_condition"]["masked"]["squared_distance"] != rec["by_condition"]["clean"]["squared_distance"]
    markdown = (out / "report.md").read_text()
    assert "TAR@FAR=1e-2" in markdown and "roc_lfw.png" in markdown and "cosine similarity" in markdown


def test_compare_table_side_by_side(tmp_path):
    good = report.build_report(_results((0.3, 1.0, 0.8)), model_name="mtarcface")
    bad = report.build_report(_results((0.3, 1.5, 1.2), flip=False), model_name="arcface")
    bad["sets"]["lfw"]["mask_usage"] = None
    del bad["sets"]["cfp_fp"]
    table = report.compare_table({"arcface": bad, "mtarcface": good})
    lines = table.strip().splitlines()
    assert lines[0].startswith("| set | model | clean acc | masked acc | mixed acc |")
    assert len(lines) == 2 + 3            # header, rule, lfw x 2 models, cfp_fp x 1
    lfw_arcface = lines[2].split("|")
    assert lfw_arcface[2].strip() == "arcface" and lfw_arcface[-2].strip() == report.MISSING
    masked_good = float(lines[3].split("|")[4])
    masked_bad = float(lines[2].split("|")[4])
    assert masked_good > masked_bad
    good_masked = good["sets"]["lfw"]["variants"]["masked"]
    assert good_masked["flip"]["accuracy"] - good_masked["plain"]["accuracy"] > 0.02   # the fixture separates them
    assert masked_good == pytest.approx(100 * good_masked["flip"]["accuracy"], abs=0.01)        # flip where computed
    mixed_tar_good = float(lines[3].split("|")[8])
    assert mixed_tar_good == pytest.approx(100 * good["sets"]["lfw"]["variants"]["mixed"]["flip"]["tar"], abs=0.01)
    bad_masked = bad["sets"]["lfw"]["variants"]["masked"]
    assert masked_bad == pytest.approx(100 * bad_masked["plain"]["accuracy"], abs=0.01)         # plain without flip
    single = report.compare_table({"mtarcface": good}).splitlines()[0]
    assert "model" not in single


def test_write_report_with_compare(tmp_path):
    other = report.build_report(_results(), model_name="arcface")
    report.write_report(_results(), str(tmp_path), compare={"arcface": other}, model_name="mt")
    markdown = (tmp_path / "report.md").read_text()
    assert "## Comparison" in markdown and "| arcface |" in markdown and "| mt |" in markdown


def test_histogram_iou():
    rng = np.random.default_rng(0)
    same = rng.uniform(0.0, 1.0, 1000)
    assert report.histogram_iou(same, same) == pytest.approx(1.0)
    assert report.histogram_iou(same, same + 2.5) == 0.0
    assert 0.2 < report.histogram_iou(same, same + 0.5) < 0.5


def test_load_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        report.load_report(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        report.load_report(str(tmp_path / "bad.json"))
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="missing"):
        report.load_report(str(tmp_path / "other.json"))
