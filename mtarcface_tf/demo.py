"""The main job: SynthFaces -> ArcFace and MTArcFace side by side -> clean/masked/mixed evaluation -> export ->
recognition of masked people through the application path. ``tools/demo.py`` runs ``run_demo``.

Both models train at the same time in two processes with one TensorFlow thread each (about a third more total
throughput than one after the other on 2 cores). Everything is written under one output directory.
"""
import json
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np

from mtarcface_tf.configs import demo as demo_configs
from mtarcface_tf.data import preview
from mtarcface_tf.data.masks import MaskAugmenter
from mtarcface_tf.data.synthetic import GENERATOR_VERSION, render_faces
from mtarcface_tf.eval import report as report_lib
from mtarcface_tf.eval.evaluator import VerificationEvaluator
from mtarcface_tf.export.embedder import make_embed_fn
from mtarcface_tf.export.saved_model import export_saved_model, training_data
from mtarcface_tf.inference.recognizer import FaceRecognizer
from mtarcface_tf.model.workdir import load_model
from mtarcface_tf.results import save_result
from mtarcface_tf.train.trainer import resolve_data, train_and_evaluate

TRAIN_TIME_FILE = "train_time.json"
GALLERY_PEOPLE = 10          # synthetic people enrolled without masks, then identified from masked photos
GALLERY_IMAGES = 3           # enrollment images per person (their mean embedding is stored)
VARIANTS = ("clean", "masked", "mixed", "combined")   # masked: both faces masked; mixed: one of the two
SAMPLE_PEOPLE = 16           # faces in the samples PNG (two rows, each with its masked copy)
QUICK_DIR = "quick"          # --quick runs live in their own subdirectory, so a full run and a quick one coexist
SETTINGS_FILE = "demo_settings.json"
SYNTHFACES_DIR = "synthfaces"


def slug(name):
    """Returns the directory name of a model name, e.g. "ArcFace+focal" -> "arcface_focal"."""
    return name.lower().replace("+", "_")


def run_directory(output_dir, quick=False):
    """Returns where a demo run keeps its artefacts: ``output_dir``, or ``output_dir/quick`` for ``--quick``."""
    return os.path.join(output_dir, QUICK_DIR) if quick else output_dir


def prepare_run_directory(run_dir, configs):
    """Makes ``run_dir`` ready for a run of ``configs``: a directory left by a run with other settings (another
    version of the demo's configs or data) has the demo's own artefacts removed first, with one line saying so;
    anything else in it is left alone. Writes the settings of this run."""
    settings = {"generator_version": GENERATOR_VERSION,
                "configs": {name: json.loads(config.to_json()) for name, config in configs.items()}}
    path = os.path.join(run_dir, SETTINGS_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous != settings:
            print(f"{run_dir}: made by a demo run with other settings; removing its SynthFaces, models and reports "
                  f"and starting afresh", flush=True)
            for name in [SYNTHFACES_DIR, "reports", "export", "gallery"] + [slug(n) for n in previous["configs"]]:
                target = os.path.join(run_dir, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.isfile(target):
                    os.remove(target)
    os.makedirs(run_dir, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    os.replace(path + ".tmp", path)


class _Prefixed:
    """A text stream that starts every line with a prefix (two trainings print to one terminal)."""

    def __init__(self, stream, prefix):
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text):
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                self.stream.write(self.prefix)
            self.stream.write(piece)
            self.at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self):
        self.stream.flush()


def _train_in_child(name, config_json, workdir, threads):
    """Process entry point: trains one model with ``threads`` TensorFlow threads; output lines prefixed by name."""
    sys.stdout = _Prefixed(sys.stdout, f"[{name}] ")
    sys.stderr = _Prefixed(sys.stderr, f"[{name}] ")
    import logging
    import ml_collections
    import tensorflow as tf
    logging.getLogger("mtarcface_tf").setLevel(logging.INFO)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    _train_timed(ml_collections.ConfigDict(json.loads(config_json)), workdir, threads)


def _train_timed(config, workdir, threads):
    """Trains one model and records its wall time in ``workdir/train_time.json``."""
    start = time.time()
    train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, TRAIN_TIME_FILE), "w", encoding="utf-8") as f:
        json.dump({"seconds": time.time() - start, "threads": threads}, f)


def train_models(configs, output_dir, parallel=True):
    """Trains every config into ``output_dir/<name>``; in parallel processes (one thread each) when ``parallel``.

    Returns {name: workdir}. Raises RuntimeError naming the model whose training failed.
    """
    workdirs = {name: os.path.join(output_dir, slug(name)) for name in configs}
    if not parallel:
        for name, config in configs.items():
            _train_timed(config, workdirs[name], os.cpu_count())
        return workdirs
    threads = max(1, (os.cpu_count() or 2) // len(configs))
    context = multiprocessing.get_context("spawn")
    processes = {name: context.Process(target=_train_in_child, args=(name, config.to_json(), workdirs[name], threads))
                 for name, config in configs.items()}
    for process in processes.values():
        process.start()
    for process in processes.values():
        process.join()
    failed = [name for name, process in processes.items() if process.exitcode != 0]
    if failed:
        raise RuntimeError(f"training of {', '.join(failed)} failed (see its log above; workdirs under {output_dir})")
    return workdirs


def evaluate_models(workdirs, bins, output_dir):
    """Evaluates each trained workdir on clean/masked/mixed pairs; writes one report per model and a comparison.

    Returns {name: report dict}; the comparison is ``output_dir/report.md``.
    """
    reports = {}
    for name, workdir in workdirs.items():
        evaluator = VerificationEvaluator(bins, masked=True, flip=True, variants=VARIANTS)
        for _ in evaluator.run(make_embed_fn(workdir)):
            pass
        reports[name] = report_lib.write_report(evaluator.results, os.path.join(output_dir, "reports", slug(name)),
                                                model_name=name)
    return reports


def recognize_masked_people(export_dir, config, output_dir):
    """Enrolls unmasked synthetic people, identifies masked photos of them through ``FaceRecognizer``.

    People are SynthFaces identities never seen in training (indices after the training and evaluation ones).
    Returns dict(people, queries, identified (fraction correct), mask_detected (fraction of queries flagged masked)).
    """
    s = config.data.synthetic
    first = s.identities + s.eval_identities
    images, labels, landmarks = render_faces(GALLERY_PEOPLE, 2 * GALLERY_IMAGES, image_size=s.image_size,
                                             seed=s.seed, first_identity=first, pose=dict(s.pose), spread=s.spread,
                                             with_landmarks=True)
    enroll = np.arange(len(images)) % (2 * GALLERY_IMAGES) < GALLERY_IMAGES
    masked, _ = MaskAugmenter(probability=1.0, seed=s.seed)(images[~enroll], landmarks=landmarks[~enroll])
    recognizer = FaceRecognizer(export_dir)
    for person in range(GALLERY_PEOPLE):
        recognizer.enroll(f"person_{person:02d}", images[enroll & (labels == person)], aligned=True)
    recognizer.gallery.save(os.path.join(output_dir, "gallery"))   # a gallery folder (search/store.py)
    results = [recognizer.identify(face, top_k=1, aligned=True)[0] for face in np.asarray(masked)]
    truth = [f"person_{label:02d}" for label in labels[~enroll]]
    identified = float(np.mean([r["identity"] == t for r, t in zip(results, truth)]))
    mask_detected = float(np.mean([r["mask"]["status"] == "mask" for r in results]))
    return dict(people=GALLERY_PEOPLE, queries=len(results), identified=identified, mask_detected=mask_detected)


def training_times(workdirs):
    """Returns a markdown line with each model's training wall time (models trained side by side share the CPU)."""
    parts = []
    for name, workdir in workdirs.items():
        with open(os.path.join(workdir, TRAIN_TIME_FILE), encoding="utf-8") as f:
            parts.append(f"{name} {json.load(f)['seconds']:.0f} s")
    return "Training time (wall, models trained side by side): " + ", ".join(parts) + "."


def run_demo(output_dir, quick=False, parallel=True, all_baselines=False, result_name=""):
    """Runs the whole demo into ``output_dir``; returns a summary dict and writes ``output_dir/summary.json``.

    ``all_baselines`` also trains ArcFace+focal and the triplet model on the same data and adds them to the table.
    ``result_name`` also keeps the figures as ``docs/results/RESULT_NAME.json`` (summary["result_file"]).
    """
    start = time.time()
    configs = demo_configs.get_configs(quick, all_baselines)
    output_dir = run_directory(output_dir, quick)
    prepare_run_directory(output_dir, configs)
    mt_config = configs["MTArcFace"]
    print(f"[1/5] SynthFaces into {output_dir}/synthfaces", flush=True)
    train_path, bins = resolve_data(mt_config, output_dir)
    write_samples(mt_config, os.path.join(output_dir, "synthfaces_samples.png"))
    for config in configs.values():
        config.data.train = train_path
        config.eval.bins = ""
    print(f"[2/5] training {', '.join(configs)} ({mt_config.num_steps} steps each)", flush=True)
    workdirs = train_models(configs, output_dir, parallel)
    print("[3/5] evaluating on clean, masked-masked, masked-clean and combined pairs", flush=True)
    reports = evaluate_models(workdirs, bins, output_dir)
    table = report_lib.compare_table(reports) + "\n\n" + training_times(workdirs)
    print("[4/5] exporting the MTArcFace SavedModel", flush=True)
    model, trained_config = load_model(workdirs["MTArcFace"])
    threshold = reports["MTArcFace"]["recommended_threshold"]
    export_dir = export_saved_model(model, os.path.join(output_dir, "export", "1"), threshold=threshold,
                                    trained_on=training_data(trained_config))
    print("[5/5] enrolling unmasked people, identifying them from masked photos", flush=True)
    recognition = recognize_masked_people(export_dir, mt_config, output_dir)
    summary = dict(output_dir=output_dir, seconds=round(time.time() - start, 1), table=table,
                   recognition=recognition, export=export_dir, reports={n: r for n, r in reports.items()},
                   synthfaces=mt_config.data.synthetic.to_dict(), steps=mt_config.num_steps)
    if result_name:
        summary["result_file"] = save_result(result_name, result_figures(summary))
    _write_summary(output_dir, summary)
    return summary


def headline_figures(reports, set_name="synth"):
    """Returns {model: {variant: {"accuracy", "tar"}} (fractions, flip-test where present) plus "mask_accuracy"}
    of each model's report on ``set_name``: the numbers the demo table shows."""
    from mtarcface_tf.eval.report import TABLE_VARIANTS, headline
    figures = {}
    for model, report in reports.items():
        entry = report["sets"][set_name]
        figures[model] = {v: {k: headline(entry["variants"][v])[k] for k in ("accuracy", "tar")}
                          for v in TABLE_VARIANTS if v in entry["variants"]}
        usage = entry["mask_usage"]
        figures[model]["mask_accuracy"] = usage["accuracy"] if usage else None
    return figures


def mask_accuracy_drop(model_figures):
    """Returns what masks cost one model of ``headline_figures``: (clean - masked) + (clean - mixed) accuracy, as a
    fraction (the same pairs, so each model's own clean accuracy is the baseline)."""
    clean = model_figures["clean"]["accuracy"]
    return 2 * clean - model_figures["masked"]["accuracy"] - model_figures["mixed"]["accuracy"]


def result_figures(summary):
    """Returns the JSON figures of a finished demo (``run_demo``'s summary) for ``results.save_result``."""
    return dict(headline=headline_figures(summary["reports"]), table=summary["table"],
                recognition=summary["recognition"], seconds=summary["seconds"],
                synthfaces=summary["synthfaces"], steps=summary["steps"])


def write_samples(config, path, people=SAMPLE_PEOPLE):
    """Writes a PNG grid of SynthFaces training identities, each row followed by the same faces masked."""
    s = config.data.synthetic
    faces, _, landmarks = render_faces(people, 1, image_size=s.image_size, seed=s.seed, pose=dict(s.pose),
                                       spread=s.spread, with_landmarks=True)
    grid, _ = preview.mask_preview_grid(faces, cols=people // 2, probability=1.0, seed=s.seed, landmarks=landmarks)
    preview.write_png(path, grid)


def _write_summary(output_dir, summary):
    recognition = summary["recognition"]
    lines = ["# mtarcface_tf demo", "", summary["table"], "",
             f"Identification of {recognition['queries']} masked photos of {recognition['people']} people enrolled "
             f"without masks: {100 * recognition['identified']:.1f}% correct; mask detected on "
             f"{100 * recognition['mask_detected']:.1f}%.", "",
             "![SynthFaces with and without masks](synthfaces_samples.png)", "",
             "Per-model reports with plots: " + ", ".join(f"[{n}](reports/{slug(n)}/report.md)"
                                                         for n in summary["reports"]),
             "", f"Total time: {summary['seconds']:.0f} s."]
    with open(os.path.join(output_dir, "report.md.tmp"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(os.path.join(output_dir, "report.md.tmp"), os.path.join(output_dir, "report.md"))
    with open(os.path.join(output_dir, "summary.json.tmp"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in summary.items() if k != "reports"}, f, indent=2)
    os.replace(os.path.join(output_dir, "summary.json.tmp"), os.path.join(output_dir, "summary.json"))
