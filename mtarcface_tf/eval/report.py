"""Evaluation report: report.json, report.md (paper-style table) and PNG plots from ``VerificationEvaluator.results``,
``IJBEvaluator.results`` (IJB-B/C: a TAR@FAR table and an ROC per set, clean and masked probes) and
``IJB1NEvaluator.results`` (IJB-B/C 1:N: top-k, TPIR and per-gallery FNIR table, a CMC plot per set).

Plots (matplotlib ``Figure`` objects, no pyplot global state): ROC curves per set (one curve per variant, log FAR
axis), histograms of same- and different-identity distances with their overlap (IOU), the mask confusion matrix.
``report.json["recommended_threshold"]`` is the verification threshold at the chosen FAR that applications read.
"""
import os

import numpy as np
from matplotlib.figure import Figure

from mtarcface_tf.atomic import atomic_path, write_text
from mtarcface_tf.data.masked_pairs import PAPER_VARIANTS
from mtarcface_tf.export.report_file import REPORT_FILE, REPORT_KEYS, read_report, write_report_file  # noqa: F401
from mtarcface_tf.eval.verification import (DEFAULT_FAR, far_label, recommend_threshold,  # noqa: F401 (re-export)
                                            recommend_threshold_from_distances)

HISTOGRAM_BINS = np.linspace(0.0, 4.0, 81)
TABLE_VARIANTS = PAPER_VARIANTS
MISSING = "–"
UNION = "combined"   # the variant that pools clean, masked and mixed pairs


def histogram_iou(same_distances, diff_distances, bins=HISTOGRAM_BINS):
    """Returns the overlap of the two distance distributions: sum(min) / sum(max) of their normalized histograms.

    Args:
      same_distances, diff_distances: 1-D squared distances of same- and different-identity pairs.
      bins: histogram bin edges.

    Returns:
      float in [0, 1]: 0 = perfectly separated, 1 = identical distributions (0 when a class is empty).
    """
    if not len(same_distances) or not len(diff_distances):
        return 0.0
    same = np.histogram(same_distances, bins)[0] / len(same_distances)
    diff = np.histogram(diff_distances, bins)[0] / len(diff_distances)
    return float(np.minimum(same, diff).sum() / np.maximum(same, diff).sum())


def _scores(evaluation):
    return dict(accuracy=evaluation["accuracy"], accuracy_std=evaluation["accuracy_std"], tar=evaluation["tar"],
                tar_std=evaluation["tar_std"], far=evaluation["far"],
                best_threshold=float(np.mean(evaluation["best_thresholds"])))


def _shown(result):
    """The evaluation plots and tables show: the flip test's when computed, else the plain one."""
    return result["flip"] or result["plain"]


def _variant_summary(result):
    issame = result["issame"]
    dist = _shown(result)["distances"]
    summary = dict(plain=_scores(result["plain"]), histogram_iou=histogram_iou(dist[issame], dist[~issame]))
    if result["flip"] is not None:
        summary["flip"] = _scores(result["flip"])
    return summary


def headline(variant_summary):
    """Returns the scores a table shows for one variant: the flip-test ones when present (insightface's habit)."""
    return variant_summary.get("flip") or variant_summary["plain"]


def _pct(value):
    return MISSING if value is None else f"{100.0 * value:.2f}"


def compare_table(reports):
    """Returns a markdown table putting several reports side by side.

    Args:
      reports: dict model name -> report dict (the content of a report.json). With one report the model column
        is left out.

    Returns:
      markdown text: one row per (set, model); columns accuracy (%) of clean, masked, mixed pairs, TAR@FAR (%) of
      the same, and mask-usage accuracy (%). Flip-test numbers where the report has them; "–" where absent.
    """
    many = len(reports) > 1
    far = far_label(next(iter(reports.values()))["far_target"]) if reports else far_label(DEFAULT_FAR)
    header = (["set"] + (["model"] if many else []) + [f"{v} acc" for v in TABLE_VARIANTS]
              + [f"{v} TAR@FAR={far}" for v in TABLE_VARIANTS] + ["mask acc"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    set_names = list(dict.fromkeys(name for report in reports.values() for name in report["sets"]))
    for set_name in set_names:
        for model, report in reports.items():
            entry = report["sets"].get(set_name)
            if entry is None:
                continue
            scores = [headline(entry["variants"][v]) if v in entry["variants"] else None for v in TABLE_VARIANTS]
            cells = ([_pct(s and s["accuracy"]) for s in scores] + [_pct(s and s["tar"]) for s in scores]
                     + [_pct(entry["mask_usage"] and entry["mask_usage"]["accuracy"])])
            lines.append("| " + " | ".join([set_name] + ([model] if many else []) + cells) + " |")
    return "\n".join(lines) + "\n"


def ijb_table(report):
    """Returns a markdown table of a report's IJB sets: one row per (set, protocol), TAR (%) at each FAR and AUC (%);
    an empty string when the report has no IJB set."""
    sets = report.get("ijb") or {}
    if not sets:
        return ""
    fars = list(next(iter(next(iter(sets.values()))["protocols"].values()))["tar"])
    lines = ["| set | protocol | " + " | ".join(f"TAR@FAR={far}" for far in fars) + " | AUC |",
             "|" + "---|" * (len(fars) + 3)]
    for name, entry in sets.items():
        for protocol, scores in entry["protocols"].items():
            cells = [_pct(scores["tar"][far]) for far in fars] + [_pct(scores["auc"])]
            lines.append(f"| {name} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_ijb_roc(name, protocols, path):
    """Writes a PNG of the ROC curves (TAR against FAR, log FAR axis) of the protocols of one IJB set."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for protocol, result in protocols.items():
        keep = result["fpr"] > 0
        ax.plot(result["fpr"][keep], result["tpr"][keep], label=f"{protocol} (AUC {100 * result['auc']:.2f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"{name}: 1:1 template verification ROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def _rate_keys(rates):
    return {f"{key:.0e}": value for key, value in rates.items()}


def _open_summary(scores):
    return dict(fnir=_rate_keys(scores["fnir"]), fpir=_rate_keys(scores["fpir"]),
                threshold=_rate_keys(scores["threshold"]), mated=scores["mated"], non_mated=scores["non_mated"],
                rank1=scores["rank1"])


def _ijb_1n_summary(results):
    summary = {}
    for name, entry in (results or {}).items():
        protocols = {}
        for protocol, result in entry["protocols"].items():
            closed = result["closed"]
            protocols[protocol] = dict(
                closed=dict(top={str(rank): value for rank, value in closed["top"].items()},
                            tpir=_rate_keys(closed["tpir"]), threshold=_rate_keys(closed["threshold"]),
                            cmc=[float(value) for value in closed["cmc"]], probes=closed["probes"]),
                open={part: _open_summary(scores) for part, scores in result["open"].items()})
        summary[name] = dict(path=entry["path"], faces=entry["faces"], probes=entry["probes"],
                             gallery=entry["gallery"], index=entry["index"], protocols=protocols, plots={})
    return summary


def ijb_1n_table(report):
    """Returns a markdown table of a report's IJB 1:N sets: one row per (set, protocol), top-k accuracy (%), TPIR (%)
    at each FPIR over the whole gallery, FNIR (%) at each FPIR per gallery; an empty string without 1:N sets."""
    sets = report.get("ijb_1n") or {}
    if not sets:
        return ""
    first = next(iter(next(iter(sets.values()))["protocols"].values()))
    ranks, fpirs, parts = list(first["closed"]["top"]), list(first["closed"]["tpir"]), list(first["open"])
    header = ([f"top-{rank}" for rank in ranks] + [f"TPIR@FPIR={fpir}" for fpir in fpirs]
              + [f"{part} FNIR@FPIR={fpir}" for part in parts for fpir in fpirs])
    lines = ["| set | protocol | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 2)]
    for name, entry in sets.items():
        for protocol, scores in entry["protocols"].items():
            cells = ([_pct(scores["closed"]["top"][rank]) for rank in ranks]
                     + [_pct(scores["closed"]["tpir"][fpir]) for fpir in fpirs]
                     + [_pct(scores["open"][part]["fnir"][fpir]) for part in parts for fpir in fpirs])
            lines.append(f"| {name} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_cmc(name, protocols, path):
    """Writes a PNG of the CMC curves (identification rate against rank) of the 1:N protocols of one IJB set
    (``protocols``: protocol -> summary with ``closed.cmc``)."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for protocol, result in protocols.items():
        cmc = result["closed"]["cmc"]
        ax.plot(np.arange(1, len(cmc) + 1), 100 * np.asarray(cmc), marker=".",
                label=f"{protocol} (top-1 {100 * cmc[0]:.2f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_title(f"{name}: 1:N CMC (gallery {' + '.join(next(iter(protocols.values()))['open'])})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def _ijb_summary(ijb_results):
    return {name: dict(path=entry["path"], pairs=entry["pairs"], faces=entry["faces"], templates=entry["templates"],
                       protocols={protocol: dict(tar={f"{far:.0e}": tar for far, tar in result["tar"].items()},
                                                 auc=result["auc"])
                                  for protocol, result in entry["protocols"].items()}, plots={})
            for name, entry in (ijb_results or {}).items()}


def _save(fig, path):
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")


def plot_roc(set_name, variants, path):
    """Writes a PNG of the ROC curves (TAR against FAR, log FAR axis) of every variant of one set."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for variant, result in variants.items():
        evaluation = _shown(result)
        fpr, tpr = evaluation["roc"]["fpr"], evaluation["roc"]["tpr"]
        keep = fpr > 0
        ax.plot(fpr[keep], tpr[keep], label=f"{variant} (acc {100 * evaluation['accuracy']:.2f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    flipped = any(r["flip"] for r in variants.values())
    ax.set_title(f"{set_name}: ROC{' (flip test)' if flipped else ''}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_distances(set_name, variants, path):
    """Writes a PNG of same/different-identity squared-distance histograms per variant, with their IOU printed."""
    fig = Figure(figsize=(4.5 * len(variants), 3.8))
    for i, (variant, result) in enumerate(variants.items()):
        ax = fig.add_subplot(1, len(variants), i + 1)
        dist, issame = _shown(result)["distances"], result["issame"]
        ax.hist(dist[issame], HISTOGRAM_BINS, alpha=0.6, density=True, label="same identity")
        ax.hist(dist[~issame], HISTOGRAM_BINS, alpha=0.6, density=True, label="different identity")
        ax.text(0.03, 0.95, f"IOU {histogram_iou(dist[issame], dist[~issame]):.3f}", transform=ax.transAxes,
                va="top")
        ax.set_xlabel("squared L2 distance")
        ax.set_title(f"{set_name}/{variant}{' (flip test)' if result['flip'] else ''}")
        ax.legend(loc="upper right", fontsize="small")
    _save(fig, path)


def plot_confusion(set_name, usage, path):
    """Writes a PNG of the 2x2 mask-usage confusion matrix (rows true, columns predicted) with counts."""
    matrix = np.asarray(usage["confusion_matrix"])
    fig = Figure(figsize=(4, 3.6))
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], ["no mask", "mask"])
    ax.set_yticks([0, 1], ["no mask", "mask"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{set_name}: mask usage (acc {100 * usage['accuracy']:.2f}%)")
    _save(fig, path)


def _pooled_threshold(results, far):
    # "combined" is the union of the other variants: pooling it too would count its pairs twice.
    pooled = [(f"{s}/{v}", r) for s, entry in results.items() for v, r in entry["variants"].items() if v != UNION]
    dist = np.concatenate([r["plain"]["distances"] for _, r in pooled])
    issame = np.concatenate([r["issame"] for _, r in pooled])
    recommended = recommend_threshold_from_distances(dist, issame, far)
    recommended["embedding"] = "plain (no flip test), L2-normalized"
    recommended["source"] = sorted(name for name, _ in pooled)
    recommended["by_condition"] = _condition_thresholds(pooled, far)
    return recommended


def _condition_thresholds(pooled, far):
    """The threshold at ``far`` per probe condition, which identification applies by the probe's mask status:
    "clean" from the clean pairs, "masked" from the mixed pairs (one face masked, the other clean: a masked probe
    against a clean gallery). A condition without pairs is left out."""
    conditions = {}
    for condition, variant in (("clean", "clean"), ("masked", "mixed")):
        chosen = [(name, result) for name, result in pooled if name.endswith(f"/{variant}")]
        if chosen:
            conditions[condition] = recommend_threshold_from_distances(
                np.concatenate([result["plain"]["distances"] for _, result in chosen]),
                np.concatenate([result["issame"] for _, result in chosen]), far)
            conditions[condition]["source"] = sorted(name for name, _ in chosen)
    return conditions


def build_report(results, far=DEFAULT_FAR, model_name="", ijb=None, ijb_1n=None):
    """Returns the report dict (what report.json holds) of ``VerificationEvaluator.results`` and, when given,
    ``IJBEvaluator.results`` (key ``ijb``) and ``IJB1NEvaluator.results`` (key ``ijb_1n``); no plots.
    ``recommended_threshold`` is None without pair sets."""
    if not results and not ijb and not ijb_1n:
        raise ValueError("no verification results to report; give at least one .bin or an IJB set")
    sets = {}
    for name, entry in results.items():
        usage = entry["mask_usage"]
        sets[name] = dict(path=entry["path"], pairs=entry["pairs"],
                          variants={v: _variant_summary(r) for v, r in entry["variants"].items()},
                          mask_usage=None if usage is None else {k: v for k, v in usage.items()}, plots={})
    return dict(model=model_name, far_target=far, sets=sets, ijb=_ijb_summary(ijb), ijb_1n=_ijb_1n_summary(ijb_1n),
                recommended_threshold=_pooled_threshold(results, far) if results else None)


def _write_plots(results, report, output_dir, ijb=None):
    for name, entry in report["ijb_1n"].items():
        entry["plots"]["cmc"] = f"cmc_ijb_{name}.png"
        plot_cmc(name, entry["protocols"], os.path.join(output_dir, entry["plots"]["cmc"]))
    for name, entry in (ijb or {}).items():
        plots = report["ijb"][name]["plots"]
        plots["roc"] = f"roc_ijb_{name}.png"
        plot_ijb_roc(name, entry["protocols"], os.path.join(output_dir, plots["roc"]))
    for name, entry in results.items():
        plots = report["sets"][name]["plots"]
        plots["roc"] = f"roc_{name}.png"
        plot_roc(name, entry["variants"], os.path.join(output_dir, plots["roc"]))
        plots["distances"] = f"distances_{name}.png"
        plot_distances(name, entry["variants"], os.path.join(output_dir, plots["distances"]))
        if entry["mask_usage"] is not None:
            plots["mask_confusion"] = f"mask_confusion_{name}.png"
            plot_confusion(name, entry["mask_usage"], os.path.join(output_dir, plots["mask_confusion"]))


def _markdown(report, compare):
    far = far_label(report["far_target"])
    rec = report["recommended_threshold"]
    lines = [f"# Verification report{': ' + report['model'] if report['model'] else ''}", ""]
    if rec:
        lines += [f"Accuracy and TAR@FAR={far} in % (insightface protocol, 10 folds; flip test where computed).", "",
                  compare_table({report["model"] or "model": report}), "## Recommended threshold", "",
                  f"At FAR={far} over {rec['pairs']} pairs ({', '.join(rec['source'])}): accept a pair when the "
                  f"squared L2 distance of the unit embeddings is below **{rec['squared_distance']:.4f}**, i.e. cosine "
                  f"similarity above **{rec['cosine_similarity']:.4f}** (measured FAR {rec['far']:.2e}, TAR "
                  f"{100 * rec['tar']:.2f}%).", ""]
    if report.get("ijb"):
        lines += ["## IJB 1:1 template verification", "",
                  "TAR in % at each FAR (insightface's eval_ijbc.py: flip test, detection-score weighting, media then "
                  "template pooling); masked: every face of the probe template masked.", "", ijb_table(report)]
        for name, entry in report["ijb"].items():
            lines += [f"{name}: {entry['faces']} faces, {entry['templates']} templates, {entry['pairs']} pairs", "",
                      f"![roc]({entry['plots']['roc']})", ""]
    if report.get("ijb_1n"):
        lines += ["## IJB 1:N identification", "",
                  "Top-k accuracy and TPIR in % over the gallery of both parts (insightface's ijb_1n.py: TPIR counts "
                  "mated scores above the ceil(probes * FPIR)-th largest non-mated score); FNIR in % per gallery part "
                  "at the threshold that holds the FPIR of non-mated searches (NIST FRVT 1:N); masked: every face of "
                  "the probe templates masked, the gallery clean.", "", ijb_1n_table(report)]
        for name, entry in report["ijb_1n"].items():
            gallery = ", ".join(f"{part} {count}" for part, count in entry["gallery"].items())
            lines += [f"{name}: {entry['probes']} probe templates, gallery templates {gallery}, {entry['faces']} faces,"
                      f" {entry['index']} search", "", f"![cmc]({entry['plots']['cmc']})", ""]
    if compare:
        lines += ["## Comparison", "", compare_table(compare), ""]
    for name, entry in report["sets"].items():
        lines += [f"## {name} ({entry['pairs']} pairs)", ""]
        for variant, summary in entry["variants"].items():
            lines.append(f"- {variant}: histogram IOU {summary['histogram_iou']:.3f}, mean best threshold "
                         f"{headline(summary)['best_threshold']:.2f}")
        if entry["mask_usage"] is not None:
            lines += ["", "Mask usage:", "", "```", entry["mask_usage"]["report"].rstrip(), "```"]
        lines += [""] + [f"![{kind}]({file})" for kind, file in entry["plots"].items()] + [""]
    return "\n".join(lines)


def write_report(results, output_dir, far=DEFAULT_FAR, compare=None, model_name="", ijb=None, ijb_1n=None):
    """Writes report.json, report.md and the PNG plots of an evaluation into ``output_dir``.

    Args:
      results: ``VerificationEvaluator.results`` (its ``far`` should equal ``far``).
      output_dir: created when missing.
      far: the FAR of the recommended threshold and of the TAR column.
      compare: optional dict model name -> report dict to show side by side with this one (this one included
        under ``model_name``).
      model_name: label of the evaluated model in the tables.
      ijb: optional ``IJBEvaluator.results`` (TAR@FAR table and ROC per IJB set).
      ijb_1n: optional ``IJB1NEvaluator.results`` (top-k / TPIR / FNIR table and CMC per IJB set).

    Returns:
      the report dict written to report.json.
    """
    os.makedirs(output_dir, exist_ok=True)
    report = build_report(results, far, model_name, ijb, ijb_1n)
    _write_plots(results, report, output_dir, ijb)
    if compare:
        compare = {**compare, model_name or "this model": report}
    write_report_file(os.path.join(output_dir, REPORT_FILE), report)
    write_text(os.path.join(output_dir, "report.md"), _markdown(report, compare))
    return report


def load_report(path):
    """Returns the report dict of a report.json; raises FileNotFoundError, or ValueError naming ``path`` when it is
    not one (``export.report_file.read_report``)."""
    return read_report(path, REPORT_KEYS)
