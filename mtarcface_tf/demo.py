"""The main job: SynthFaces -> ArcFace and MTArcFace side by side -> clean/masked/mixed evaluation -> export ->
recognition of masked people through the application path (photos -> detector -> alignment -> gallery).
``tools/demo.py`` runs ``run_demo``.

Both models train at the same time in two processes with one TensorFlow thread each (about a third more total
throughput than one after the other on 2 cores). Everything is written under one output directory.
"""
import json
import multiprocessing
import os
import shutil
import sys
import time

import cv2
import numpy as np

from mtarcface_tf.atomic import atomic_open, write_text
from mtarcface_tf.configs import demo as demo_configs
from mtarcface_tf.data import preview
from mtarcface_tf.data.ijb_synth import JPEG_QUALITY, loose_crop
from mtarcface_tf.data.masks import MaskAugmenter
from mtarcface_tf.data.synthetic import GENERATOR_VERSION, TEMPLATE_SIZE, render_faces
from mtarcface_tf.eval import report as report_lib
from mtarcface_tf.eval.registry import build_evaluators
from mtarcface_tf.eval.run import run_and_report
from mtarcface_tf.export.embedder import make_embed_fn
from mtarcface_tf.export.saved_model import export_saved_model, training_data
from mtarcface_tf.inference.recognizer import FaceRecognizer, NoFaceError
from mtarcface_tf.model.workdir import load_model
from mtarcface_tf.quiet import quiet_tensorflow
from mtarcface_tf.results import save_result
from mtarcface_tf.train.trainer import resolve_data, train_and_evaluate

TRAIN_TIME_FILE = "train_time.json"
SCENE_STREAM = 11            # rng stream of the recognition photos' placement, apart from SynthFaces' own streams
SAMPLE_PEOPLE = 16           # faces in the samples PNG (two rows, each with its masked copy)
QUICK_DIR = "quick"          # --quick runs live in their own subdirectory, so a full run and a quick one coexist
SETTINGS_FILE = "demo_settings.json"
SYNTHFACES_DIR = "synthfaces"
PHOTOS_DIR = "photos"        # the recognition step's photos: enrol/NAME/*.jpg (unmasked), probes/NAME_K.jpg (masked)


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
            made = [SYNTHFACES_DIR, "reports", "export", "gallery", "gallery.npz", PHOTOS_DIR]
            for name in made + [slug(n) for n in previous["configs"]]:
                target = os.path.join(run_dir, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.isfile(target):
                    os.remove(target)
    os.makedirs(run_dir, exist_ok=True)
    with atomic_open(path) as f:
        json.dump(settings, f, indent=2)


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
    quiet_tensorflow(argv=[])   # the parent's choice, inherited through the environment
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


def evaluate_models(workdirs, configs, bins, output_dir):
    """Evaluates each trained workdir with its config's evaluators plus the SynthFaces pairs ``bins``; writes one
    report per model under ``output_dir/reports``.

    Returns {name: report dict}.
    """
    reports = {}
    for name, workdir in workdirs.items():
        declared = build_evaluators(configs[name].evals, configs[name].seed, extra_bins=bins)
        reports[name], _ = run_and_report(declared, make_embed_fn(workdir),
                                          os.path.join(output_dir, "reports", slug(name)),
                                          far=configs[name].evals.verification.far, model_name=name)
    return reports


def write_recognition_photos(config, photo_dir, settings=None):
    """Writes the recognition step's photos: SynthFaces people never seen in training or evaluation (identities
    after those), each placed in a larger scene (``data.ijb_synth.loose_crop``) as a JPEG file.

    ``photo_dir/enrol/person_NN/K.jpg`` are unmasked; ``photo_dir/probes/person_NN_K.jpg`` carry a mask painted on
    the face before it is placed in the scene: the same painter (``MaskAugmenter``, fitted to the face's landmarks)
    as training and the masked pairs, and, the placement being a similarity, the mask that painting in the scene
    with the mapped landmarks would give. ``settings``: configs/demo.py's RECOGNITION keys (default: it).

    Returns ``{"enrol": folder, "probes": [(path, true name), ...]}``.
    """
    settings = settings or demo_configs.RECOGNITION
    s = config.data.synthetic
    enrol_photos, probe_photos = settings["enrol_photos"], settings["probe_photos"]
    images, labels, landmarks = render_faces(settings["people"], enrol_photos + probe_photos, image_size=TEMPLATE_SIZE,
                                             seed=s.seed, first_identity=s.identities + s.eval_identities,
                                             pose=dict(s.pose), spread=s.spread, with_landmarks=True)
    probe = np.arange(len(images)) % (enrol_photos + probe_photos) >= enrol_photos
    masked, _ = MaskAugmenter(probability=1.0, seed=s.seed)(images[probe], landmarks=landmarks[probe])
    images[probe] = np.asarray(masked)
    rng = np.random.default_rng([s.seed, SCENE_STREAM])
    enrol_dir, probes = os.path.join(photo_dir, "enrol"), []
    for index, (face, label, points) in enumerate(zip(images, labels, landmarks)):
        name, number = f"person_{label:02d}", index % (enrol_photos + probe_photos)
        scene, _ = loose_crop(face, points, rng, settings["scene_size"], settings["face_fraction"])
        if probe[index]:
            path = os.path.join(photo_dir, "probes", f"{name}_{number}.jpg")
            probes.append((path, name))
        else:
            path = os.path.join(enrol_dir, name, f"{number}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return {"enrol": enrol_dir, "probes": probes}


def recognize_masked_people(export_dir, config, output_dir):
    """Enrols unmasked people from photos and identifies them from masked photos, all through ``FaceRecognizer``
    with its default detector: detection, five-point alignment, embedding, gallery search, mask status.

    A photo where the detector finds no face counts as not identified (and is counted apart).
    Returns dict(people, enrolled (people with at least one face found), enrol_photos, enrol_found, queries,
    probes_found, identified (fraction of all queries correct), identified_of_found, mask_detected (fraction of
    found probes called masked), detector (class name)).
    """
    photos = write_recognition_photos(config, os.path.join(output_dir, PHOTOS_DIR))
    recognizer = FaceRecognizer(export_dir)
    enrolment = recognizer.enroll_folder(photos["enrol"], progress=False)
    recognizer.gallery.save(os.path.join(output_dir, "gallery"))   # a gallery folder (search/store.py)
    found = []            # (answer, true name) of each probe where a face was found
    for path, truth in photos["probes"] if len(recognizer.gallery) else ():
        try:
            found.append((recognizer.identify(path, top_k=1)[0], truth))
        except NoFaceError:
            pass
    queries = len(photos["probes"])
    correct = sum(answer["identity"] == truth for answer, truth in found)
    enrolled_photos = sum(enrolment["enrolled"].values())
    return dict(people=demo_configs.RECOGNITION["people"], enrolled=len(enrolment["enrolled"]),
                enrol_photos=enrolled_photos + len(enrolment["failed"]), enrol_found=enrolled_photos,
                queries=queries, probes_found=len(found), identified=correct / queries,
                identified_of_found=correct / len(found) if found else 0.0,
                mask_detected=float(np.mean([a["mask"]["status"] == "mask" for a, _ in found])) if found else 0.0,
                detector=type(recognizer.detector).__name__.removesuffix("Detector"))


def training_times(workdirs):
    """Returns a markdown line with each model's training wall time (models trained side by side share the CPU)."""
    parts = []
    for name, workdir in workdirs.items():
        with open(os.path.join(workdir, TRAIN_TIME_FILE), encoding="utf-8") as f:
            parts.append(f"{name} {json.load(f)['seconds']:.0f} s")
    return "Training time (wall, models trained side by side): " + ", ".join(parts) + "."


def run_demo(output_dir, quick=False, parallel=True, all_baselines=False, result_name="", seed=None):
    """Runs the whole demo into ``output_dir``; returns a summary dict and writes ``output_dir/summary.json``.

    ``all_baselines`` also trains ArcFace+focal and the triplet model on the same data and adds them to the table.
    ``result_name`` also keeps the figures as ``docs/results/RESULT_NAME.json`` (summary["result_file"]).
    ``seed``: the training seed of every model (initialisation, shuffling, masks); None keeps the configs'.
    """
    start = time.time()
    configs = demo_configs.get_configs(quick, all_baselines)
    for config in configs.values() if seed is not None else ():
        config.seed = seed
    output_dir = run_directory(output_dir, quick)
    prepare_run_directory(output_dir, configs)
    mt_config = configs["MTArcFace"]
    print(f"[1/5] SynthFaces into {output_dir}/synthfaces", flush=True)
    train_path, bins = resolve_data(mt_config, output_dir)
    write_samples(mt_config, os.path.join(output_dir, "synthfaces_samples.png"))
    for config in configs.values():
        config.data.train = train_path
    print(f"[2/5] training {', '.join(configs)} ({mt_config.num_steps} steps each)", flush=True)
    workdirs = train_models(configs, output_dir, parallel)
    print("[3/5] evaluating on clean, masked-masked, masked-clean and combined pairs", flush=True)
    reports = evaluate_models(workdirs, configs, bins, output_dir)
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


def recognition_line(recognition):
    """Returns one line saying how the recognition step went (``recognize_masked_people``'s dict)."""
    return (f"Masked people identified: {100 * recognition['identified']:.1f}% of {recognition['queries']} photos "
            f"({recognition['enrolled']} of {recognition['people']} people enrolled from unmasked photos; "
            f"{recognition['detector']} found {recognition['enrol_found']} of {recognition['enrol_photos']} "
            f"unmasked and {recognition['probes_found']} of {recognition['queries']} masked faces, a missed face "
            f"counting as not identified; {100 * recognition['identified_of_found']:.1f}% of the found ones); "
            f"mask detected on {100 * recognition['mask_detected']:.1f}% of the found masked faces.")


def _write_summary(output_dir, summary):
    lines = ["# mtarcface_tf demo", "", summary["table"], "", recognition_line(summary["recognition"]), "",
             "![SynthFaces with and without masks](synthfaces_samples.png)", "",
             "Per-model reports with plots: " + ", ".join(f"[{n}](reports/{slug(n)}/report.md)"
                                                         for n in summary["reports"]),
             "", f"Total time: {summary['seconds']:.0f} s."]
    write_text(os.path.join(output_dir, "report.md"), "\n".join(lines) + "\n")
    with atomic_open(os.path.join(output_dir, "summary.json")) as f:
        json.dump({k: v for k, v in summary.items() if k != "reports"}, f, indent=2)
