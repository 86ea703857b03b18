"""A rehearsal of the paper's run at reduced scale: every stage of docs/paper_run.md, timed and extrapolated.

``run_rehearsal`` writes an MS1MV2-format set from SynthFaces (``faces_emore/``: ``train.rec`` / ``train.idx`` /
``property`` as insightface packs them, ``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin`` without landmark files, as
insightface ships them), then runs the stages of the real run in order: convert -> landmarks -> train with
``configs/paper.py`` (only steps, batch and data paths overridden) -> evaluate (clean / masked / mixed) -> export
(SavedModel and ONNX) -> enroll and identify masked people through the application (detection included). Each stage
calls the library function its tool calls, with the arguments the documented command (``COMMANDS``) gives it, in
this process. Why not the tools as subprocesses: the rehearsal is small, so each tool's start-up (Python,
TensorFlow, workers) would be a large share of every stage's time and spoil the extrapolation to the full run;
in-process the work is timed on its own, and the tools add nothing but flag parsing (which
tests/test_readme_commands.py checks for every command of the guide). The two data stages run in a fresh process
each (``_in_fresh_process``), since their converters fork workers.

Extrapolation (``extrapolate``): conversion and landmarks run twice, on a probe (the first eighth of the
identities) and on everything, and the full run's time is the fitted start-up + per-crop time x 5.8M crops;
training uses the trainer's steady-state rate (its last progress window) for 153.6M images, plus one evaluation of
the three full-size sets per ``config.evals.verification.every`` steps; evaluation scales with images (38,000 at
full size);
export and the application do not depend on the data set's size. The GPU columns are on paper: the training FLOPs
per image (``model.flops``, forward x 3, the 85,742-class head included) over ``GPU["utilisation"]`` of the dense
bf16 peak, divided by the GPU count; memory per replica is estimated from the activations (``gpu_memory``).
"""
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import time

import cv2
import numpy as np

from mtarcface_tf.configs import paper
from mtarcface_tf.data import bin_pairs, convert, recordio, synthetic
from mtarcface_tf.images import encode_jpeg
from mtarcface_tf.data.masks import MaskAugmenter
from mtarcface_tf.eval.report import compare_table
from mtarcface_tf.eval.run import evaluate_source, evals_config
from mtarcface_tf.export.run import export_source
from mtarcface_tf.faces.align import TEMPLATE_SIZE
from mtarcface_tf.faces.detect import choose_detector
from mtarcface_tf.inference import media
from mtarcface_tf.model import flops
from mtarcface_tf.model.build import build_mtarcface
from mtarcface_tf.results import save_result
from mtarcface_tf.train import checkpoints as ckpt_lib
from mtarcface_tf.train.trainer import train_and_evaluate

# The full run (arXiv 2104.09874 and insightface's faces_emore): crops, training images, verification images.
FULL_RUN = dict(crops=5_800_000, identities=85_742, steps=300_000, batch_size=512, replicas_paper=2,
                sets={"lfw": 12_000, "cfp_fp": 14_000, "agedb_30": 12_000})
# One H100 / H200 SXM: dense bf16 peak, and the share of it an LResNet-50 step is assumed to reach. The anchor:
# insightface's arcface_torch measured IResNet-100 fp16 at 3,173 img/s on 8 V100s (~23% of their 125 TFLOP/s);
# batch norm and PReLU are bound by memory bandwidth, which grew less than compute from V100 to H100.
GPU = dict(name="H100/H200", peak_flops=989e12, utilisation=0.20, memory_gib=80)
GPU_COUNTS = (1, 8)
PROBE_FRACTION = 8               # the probe holds the first 1/8 of the identities
EVAL_FORWARD_PASSES = 6          # the evaluator embeds each variant (clean, masked, mixed) with its mirror
# State kept per trainable parameter in a training step: the weight, its gradient, SGD's momentum (float32).
STATE_COPIES = 3
LOGIT_COPIES = 3                 # cosines, scaled logits, their gradient: [batch, classes] each
SETS = ("lfw", "cfp_fp", "agedb_30")
SET_POSES = {"lfw": dict(synthetic.DEFAULT_POSE), "agedb_30": dict(synthetic.DEFAULT_POSE),
             "cfp_fp": dict(synthetic.DEFAULT_POSE, yaw=30.0)}   # CFP-FP pairs a frontal face with a profile
# Application photos: the face with a border of PAD pixels, upscaled PHOTO_SCALE times (RetinaFace finds no face in
# the padded 112-pixel face itself; a face of 224 pixels in a 448-pixel photo it finds at confidence 1.0).
PAD = TEMPLATE_SIZE // 2
PHOTO_SCALE = 2
DATA_SEED = 7

# The commands of the full run, in order (docs/paper_run.md shows them; each stage below calls what they call).
COMMANDS = {
    "convert": "python tools/convert.py --source=recordio --input=faces_emore/train.rec --output_dir=data/ms1mv2 "
               "--workers=2",
    "landmarks": "python tools/convert.py --source=tfrecord --add_landmarks --input=data/ms1mv2 "
                 "--output_dir=data/ms1mv2_landmarks --workers=2",
    "train": "python tools/train.py --config=configs/paper.py --workdir=runs/paper "
             "--config.data.train=data/ms1mv2_landmarks "
             "--config.evals.verification.bins=faces_emore/lfw.bin,faces_emore/cfp_fp.bin,faces_emore/agedb_30.bin",
    "evaluate": "python tools/evaluate.py --workdir=runs/paper "
                "--bins=faces_emore/lfw.bin,faces_emore/cfp_fp.bin,faces_emore/agedb_30.bin --output_dir=reports/paper",
    "export": "python tools/export.py --workdir=runs/paper --export_dir=export --report=reports/paper/report.json "
              "--onnx",
    "identify": "python tools/recognize.py enroll --model=export --gallery=gallery --images=people/ && "
                "python tools/recognize.py identify --model=export --gallery=gallery --input=photos/ "
                "--output_dir=identified",
}


@dataclasses.dataclass
class Scale:
    """The rehearsal's size: training crops (identities x images), pairs per verification set, training steps and
    batch, conversion workers, and the people enrolled / masked photos identified through the application."""
    identities: int = 200
    images_per_identity: int = 20
    pairs: int = 50
    steps: int = 30
    batch_size: int = 16
    workers: int = 2
    people: int = 5
    enroll_images: int = 2
    query_images: int = 2


def _timed(function, *args, **kwargs):
    """Returns ``(function(*args, **kwargs), wall seconds)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


# -- the data: an MS1MV2-format folder from SynthFaces -------------------------------------------------------

def _faces(first_identity, identities, images, pose=None):
    """Returns ``(uint8 [N, 112, 112, 3] RGB, labels int64 [N] from 0, landmarks float32 [N, 5, 2])``."""
    return synthetic.render_faces(identities, images, seed=DATA_SEED, first_identity=first_identity, pose=pose,
                                  with_landmarks=True)


def _write_rec(rec_path, faces, labels):
    encoded = (encode_jpeg(face, convert.DEFAULT_JPEG_QUALITY) for face in faces)
    return recordio.write_training_set(rec_path, labels, encoded)


def write_faces_emore(folder, scale):
    """Writes ``folder`` as insightface's ``faces_emore`` at reduced scale, plus ``probe.rec`` / ``probe.idx`` (the
    first 1/PROBE_FRACTION of the identities, for the two-point timing of the data stages).

    Identities: training ``0 .. scale.identities - 1``, then each verification set's own. Returns
    dict(crops, identities, probe_crops, bins={set: path}, pairs).
    """
    os.makedirs(folder, exist_ok=True)
    faces, labels, _ = _faces(0, scale.identities, scale.images_per_identity)
    crops, identities = _write_rec(os.path.join(folder, "train.rec"), faces, labels)
    recordio.write_property(folder, identities, TEMPLATE_SIZE)
    probe = labels < max(1, scale.identities // PROBE_FRACTION)
    probe_crops, _ = _write_rec(os.path.join(folder, "probe.rec"), faces[probe], labels[probe])
    bins, first = {}, scale.identities
    set_identities = max(2, scale.pairs // 2)
    for name in SETS:
        items, issame = synthetic.eval_pair_plan(DATA_SEED, first, set_identities, scale.pairs)
        params = {i: synthetic.identity_params(DATA_SEED, i) for i in {i for i, _ in items}}
        images = np.stack([synthetic.render_face(params[i], synthetic.image_rng(DATA_SEED, i, j), TEMPLATE_SIZE,
                                                 SET_POSES[name])[0] for i, j in items])
        bins[name] = os.path.join(folder, f"{name}.bin")
        bin_pairs.save_bin(bins[name], images, issame, ext=".jpg")
        first += set_identities
    return dict(crops=crops, identities=identities, probe_crops=probe_crops, bins=bins, pairs=scale.pairs,
                next_identity=first)


def write_people(folder, scale, first_identity):
    """Writes application photos of new people: ``people/NAME/k.png`` unmasked (to enroll) and ``photos/NAME_k.png``
    with a painted mask (to identify), each face padded by PAD pixels of replicated border and upscaled PHOTO_SCALE
    times. Returns the query count."""
    per_person = scale.enroll_images + scale.query_images
    faces, labels, landmarks = _faces(first_identity, scale.people, per_person)
    query = np.arange(len(faces)) % per_person >= scale.enroll_images
    masked, _ = MaskAugmenter(probability=1.0, seed=DATA_SEED)(faces[query], landmarks=landmarks[query])
    faces[query] = np.asarray(masked)
    for index, (face, label) in enumerate(zip(faces, labels)):
        name = f"person_{label:02d}"
        path = (os.path.join(folder, "photos", f"{name}_{index}.png") if query[index]
                else os.path.join(folder, "people", name, f"{index}.png"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        photo = cv2.resize(cv2.copyMakeBorder(face, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE), None, fx=PHOTO_SCALE,
                           fy=PHOTO_SCALE, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(path, cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return int(query.sum())


# -- the stages -----------------------------------------------------------------------------------------------

def _fit(probe, full):
    """Returns ``(start-up seconds, seconds per item)`` through two ``(items, seconds)`` points (per item from the
    larger one alone when timing noise makes the slope non-positive)."""
    (n0, t0), (n1, t1) = probe, full
    per_item = (t1 - t0) / (n1 - n0) if n1 > n0 else 0.0
    if per_item <= 0:
        per_item = t1 / n1
    return max(0.0, t1 - per_item * n1), per_item


def _in_fresh_process(function, *args):
    """Returns ``function(*args)`` run in a new (spawned) process. The converters fork their workers, and a fork
    of a process whose TensorFlow runtime has started (any op run before, e.g. by a test) can deadlock; a fresh
    process has only imported TensorFlow, as the tool has when it forks."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _data_stage(run_once, probe_items, full_items):
    """Runs ``run_once(probe)`` (True: the probe, False: everything); returns the stage's figures."""
    _, probe_seconds = _timed(run_once, True)
    manifest, seconds = _timed(run_once, False)
    startup, per_item = _fit((probe_items, probe_seconds), (full_items, seconds))
    return dict(items=full_items, unit="crops", seconds=seconds, rate=full_items / seconds,
                probe=dict(items=probe_items, seconds=probe_seconds), startup_seconds=startup,
                seconds_per_item=per_item, manifest_notes=manifest["notes"])


def stage_convert(root, data, workers):
    """insightface .rec -> TFRecords (probe and full). Returns the stage figures."""
    def run_once(probe):
        name = "probe" if probe else "train"
        return convert.convert_recordio(os.path.join(root, "faces_emore", f"{name}.rec"),
                                        os.path.join(root, "data", f"{name}_ms1mv2"), "train", workers=workers,
                                        command=COMMANDS["convert"], progress=False)
    return _data_stage(run_once, data["probe_crops"], data["crops"])


def stage_landmarks(root, data, workers):
    """TFRecords -> a copy with the five landmarks of each crop, the tool's default detector. Returns figures."""
    detector, note = choose_detector(None)
    if note:
        print(note, flush=True)

    def run_once(probe):
        name = "probe" if probe else "train"
        return convert.add_landmarks(os.path.join(root, "data", f"{name}_ms1mv2"),
                                     os.path.join(root, "data", f"{name}_ms1mv2_landmarks"), "train",
                                     detector=detector, workers=workers, command=COMMANDS["landmarks"],
                                     progress=False)
    figures = _data_stage(run_once, data["probe_crops"], data["crops"])
    figures["detector"] = detector
    return figures


def paper_config(scale, train_path, bins):
    """Returns ``configs/paper.py``'s config with only steps, batch and data paths overridden."""
    config = paper.get_config()
    config.num_steps = scale.steps
    config.batch_size = scale.batch_size
    config.data.train = train_path
    config.evals.verification.bins = ",".join(bins)
    return config


def stage_train(config, workdir):
    """Trains; returns the figures (steady-state images/s from the trainer's last progress window)."""
    results, seconds = _timed(train_and_evaluate, config, workdir)
    return dict(items=config.num_steps * config.batch_size, unit="images", seconds=seconds,
                rate=results["images_per_sec"], steps=config.num_steps, batch_size=config.batch_size,
                loss=results.get("loss"))


def stage_evaluate(workdir, bins, output_dir):
    """Evaluates the workdir on the sets (clean / masked / mixed, flip test). Returns the figures and the report."""
    (report, _), seconds = _timed(evaluate_source, workdir, output_dir, evals_config(bins=list(bins.values())),
                                  model_name="MTArcFace")
    images = sum(len(bin_pairs.read_bin_raw(path)[1]) * 2 for path in bins.values())
    return dict(items=images, unit="images", seconds=seconds, rate=images / seconds,
                report=os.path.join(output_dir, "report.json")), report


def stage_export(workdir, export_dir, report_path):
    """Exports as ``tools/export.py --onnx --report=REPORT`` does (``export.run.export_source``): the SavedModel,
    then the two ONNX files and their parity with it. Returns the figures (saved_model, onnx, min_cosine)."""
    exported, seconds = _timed(export_source, workdir, export_dir, report=report_path, onnx=True,
                               log=lambda line, error=False: None)
    if exported["failed"]:
        raise RuntimeError(f"rehearsal: export failed for {exported['failed']}")
    return dict(items=1, unit="model", seconds=seconds, rate=1 / seconds, saved_model=exported["export_dir"],
                onnx=exported["onnx"], min_cosine=exported["onnx_min_cosine"])


def identify_people(export_dir, folder):
    """Enrolls ``folder/people`` and identifies ``folder/photos`` with the tool's default detector, as
    ``tools/recognize.py`` does. Returns dict(queries, identified (fraction), mask_detected (fraction))."""
    gallery = os.path.join(folder, "gallery")
    status = media.run_command("enroll", [], export_dir, gallery=gallery, images=os.path.join(folder, "people"))
    out = os.path.join(folder, "identified")
    status = status or media.run_command("identify", [], export_dir, gallery=gallery,
                                         source=os.path.join(folder, "photos"), output_dir=out)
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        rows = json.load(f)
    truth = [os.path.basename(row["source"]).rsplit("_", 1)[0] for row in rows]
    return dict(status=status, queries=len(rows),
                identified=float(np.mean([row["identity"] == name for row, name in zip(rows, truth)])),
                mask_detected=float(np.mean([row["mask"] == "mask" for row in rows])))


def stage_identify(export_dir, folder, queries):
    found, seconds = _timed(identify_people, export_dir, folder)
    return dict(items=queries, unit="photos", seconds=seconds, rate=queries / seconds, **found)


# -- extrapolation --------------------------------------------------------------------------------------------

def network_costs(config):
    """Returns the paper network's per-image costs: dict(forward_flops, train_flops, activations (values kept for
    the backward pass), trainable and other parameters, classes) with the 85,742-class head."""
    model = build_mtarcface(FULL_RUN["identities"], config)
    forward = flops.forward_flops(model)
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    return dict(forward_flops=forward, train_flops=forward * flops.TRAIN_STEP_FORWARD_MULTIPLE,
                activations=flops.activation_elements(model), trainable_parameters=trainable,
                other_parameters=int(model.count_params()) - trainable, classes=FULL_RUN["identities"])


def gpu_memory(costs, per_replica_batch, activation_bytes):
    """Estimated GPU memory (GiB) of one replica's training step: float32 weights, gradients and momentum of every
    parameter (the class centres included) + the activations every layer outputs for the batch (``activation_bytes``
    each: 4 in float32, 2 under mixed_float16) + the batch's logits and their gradient. An upper bound where XLA
    fuses or recomputes; the framework's own workspace comes on top."""
    state = 4 * (STATE_COPIES * costs["trainable_parameters"] + costs["other_parameters"])
    activations = activation_bytes * costs["activations"] * per_replica_batch
    logits = 4 * LOGIT_COPIES * per_replica_batch * costs["classes"]
    return (state + activations + logits) / 2**30


def _gpu_seconds(flop_count, gpus):
    return flop_count / (gpus * GPU["peak_flops"] * GPU["utilisation"])


def extrapolate(stages, costs):
    """Returns {stage: dict(full_items, here_seconds, gpu_seconds {count: s} or None)} for the full run."""
    eval_images = sum(FULL_RUN["sets"].values())
    eval_flops = EVAL_FORWARD_PASSES * eval_images * costs["forward_flops"]
    evaluations = FULL_RUN["steps"] // paper.get_config().evals.verification.every
    out = {}
    for name in ("convert", "landmarks"):
        stage = stages[name]
        out[name] = dict(full_items=FULL_RUN["crops"], gpu_seconds=None,
                         here_seconds=stage["startup_seconds"] + stage["seconds_per_item"] * FULL_RUN["crops"])
    evaluate_here = eval_images / stages["evaluate"]["rate"]
    train_images = FULL_RUN["steps"] * FULL_RUN["batch_size"]
    out["train"] = dict(full_items=train_images, evaluations=evaluations,
                        here_seconds=train_images / stages["train"]["rate"] + evaluations * evaluate_here,
                        gpu_seconds={n: _gpu_seconds(train_images * costs["train_flops"], n)
                                     + evaluations * _gpu_seconds(eval_flops, 1) for n in GPU_COUNTS})
    out["evaluate"] = dict(full_items=eval_images, here_seconds=evaluate_here,
                           gpu_seconds={n: _gpu_seconds(eval_flops, 1) for n in GPU_COUNTS})
    for name in ("export", "identify"):
        out[name] = dict(full_items=stages[name]["items"], here_seconds=stages[name]["seconds"], gpu_seconds=None)
    return out


def _folder_bytes(*paths):
    """Returns the bytes of the files under ``paths`` (folders or files)."""
    total = 0
    for path in paths:
        if os.path.isfile(path):
            total += os.path.getsize(path)
        for folder, _, files in os.walk(path):
            total += sum(os.path.getsize(os.path.join(folder, name)) for name in files)
    return total


def disk_usage(root, crops, keep_checkpoints):
    """Returns {what: dict(here=bytes, full=bytes)} of what each stage leaves on disk: the data scaled from this
    run's crops to the full run's (the SynthFaces JPEGs stand in for MS1MV2's, see docs/paper_run.md), the workdir as
    ``keep_checkpoints`` checkpoints plus the best one (the same network, so the same size), the exports as they are."""
    scale = FULL_RUN["crops"] / crops
    emore = os.path.join(root, "faces_emore")
    data = {"faces_emore (train.rec, train.idx)": _folder_bytes(*(os.path.join(emore, name) for name in
                                                                   ("train.rec", "train.idx", "property"))),
            "TFRecords (convert)": _folder_bytes(os.path.join(root, "data", "train_ms1mv2")),
            "TFRecords with landmarks": _folder_bytes(os.path.join(root, "data", "train_ms1mv2_landmarks"))}
    out = {name: dict(here=size, full=int(size * scale)) for name, size in data.items()}
    checkpoints = os.path.join(root, "runs", "paper", ckpt_lib.CHECKPOINT_DIR)
    one = _folder_bytes(checkpoints) / max(1, len([n for n in os.listdir(checkpoints) if n.endswith(".index")]))
    out["workdir (checkpoints)"] = dict(here=_folder_bytes(os.path.join(root, "runs")),
                                        full=int(one * (keep_checkpoints + 1)))
    export = _folder_bytes(os.path.join(root, "export"))
    out["export (SavedModel, ONNX)"] = dict(here=export, full=export)
    return out


def memory_table(costs):
    """Returns {"REPLICAS x BATCH": {"float32": GiB, "mixed_float16": GiB}} for the paper's global batch of 512."""
    table = {}
    for replicas in (1, FULL_RUN["replicas_paper"], 8):
        batch = FULL_RUN["batch_size"] // replicas
        table[f"{replicas} x {batch}"] = {"float32": round(gpu_memory(costs, batch, 4), 1),
                                          "mixed_float16": round(gpu_memory(costs, batch, 2), 1)}
    return table


# -- the table ------------------------------------------------------------------------------------------------

def _duration(seconds):
    if seconds is None:
        return "CPU stage"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_table(stages, full, memory, disk):
    """Returns the markdown lines of the rehearsal table (stage times and throughput here, the full run here and on
    1 and 8 GPUs), of the GPU memory estimate and of the disk each stage leaves."""
    head = (f"| stage | here: work | here: time | here: throughput | full run: work | full run, this machine | "
            f"full run, 1 x {GPU['name']} | full run, 8 x {GPU['name']} |")
    lines = [head, "|" + "---|" * 8]
    for name, stage in stages.items():
        projection = full[name]
        gpus = projection["gpu_seconds"] or {}
        lines.append(f"| {name} | {stage['items']:,} {stage['unit']} | {_duration(stage['seconds'])} | "
                     f"{stage['rate']:,.2f} {stage['unit']}/s | {projection['full_items']:,} | "
                     f"{_duration(projection['here_seconds'])} | "
                     + " | ".join(_duration(gpus.get(n)) if gpus else "CPU stage" for n in GPU_COUNTS) + " |")
    lines += ["", "GPU memory per replica for the paper's global batch of 512 (estimate, GiB; see docs/paper_run.md):",
              "", "| replicas x batch per replica | float32 (the paper's config) | mixed_float16 |", "|---|---|---|"]
    lines += [f"| {key} | {value['float32']} | {value['mixed_float16']} |" for key, value in memory.items()]
    lines += ["", "| on disk | here | full run |", "|---|---|---|"]
    lines += [f"| {name} | {size['here'] / 2**20:,.1f} MiB | {size['full'] / 2**30:,.1f} GiB |"
              for name, size in disk.items()]
    return lines


# -- the whole rehearsal --------------------------------------------------------------------------------------

def _peak_memory_gib():
    """Returns this process's peak resident memory (VmHWM) in GiB, or None where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def run_rehearsal(output_dir, scale=None, result_name="", config_overrides=None):
    """Runs every stage of the paper's run at ``scale`` (``Scale()`` when None) in ``output_dir`` (made afresh:
    it must not exist or be empty); prints progress and the table.

    ``config_overrides`` ({dotted key: value}) change the training config further (tests shrink the network with
    it; the table is then not the paper's). ``result_name`` keeps the figures as docs/results/NAME.json.
    Returns dict(stages, full, memory, disk, costs, table (lines), data, evaluation (report sets), seconds,
    result_file).
    """
    scale = scale or Scale()
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise ValueError(f"{output_dir}: not empty; the rehearsal starts from nothing: give a new --output_dir")
    start = time.perf_counter()
    root = os.path.abspath(output_dir)
    emore = os.path.join(root, "faces_emore")
    print(f"[0/6] writing an MS1MV2-format set from SynthFaces into {emore}", flush=True)
    data, data_seconds = _timed(write_faces_emore, emore, scale)
    queries = write_people(root, scale, data["next_identity"])
    stages = {}
    print(f"[1/6] convert: {data['crops']:,} crops of {data['identities']} identities", flush=True)
    stages["convert"] = _in_fresh_process(stage_convert, root, data, scale.workers)
    print("[2/6] landmarks of every crop", flush=True)
    stages["landmarks"] = _in_fresh_process(stage_landmarks, root, data, scale.workers)
    config = paper_config(scale, os.path.join(root, "data", "train_ms1mv2_landmarks"), data["bins"].values())
    for key, value in (config_overrides or {}).items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    workdir = os.path.join(root, "runs", "paper")
    print(f"[3/6] train configs/paper.py: {scale.steps} steps of {scale.batch_size}", flush=True)
    stages["train"] = stage_train(config, workdir)
    print("[4/6] evaluate on lfw / cfp_fp / agedb_30, clean / masked / mixed", flush=True)
    stages["evaluate"], report = stage_evaluate(workdir, data["bins"], os.path.join(root, "reports", "paper"))
    print("[5/6] export the SavedModel and ONNX", flush=True)
    export_dir = os.path.join(root, "export")
    stages["export"] = stage_export(workdir, export_dir, stages["evaluate"]["report"])
    print("[6/6] enroll people without masks, identify them from masked photos", flush=True)
    stages["identify"] = stage_identify(export_dir, root, queries)
    costs = network_costs(config)
    full = extrapolate(stages, costs)
    memory = memory_table(costs)
    disk = disk_usage(root, data["crops"], config.keep_checkpoints)
    table = format_table(stages, full, memory, disk)
    evaluation_table = compare_table({"MTArcFace": report}).splitlines()
    summary = dict(stages=stages, full=full, memory=memory, disk=disk, costs=costs, table=table,
                   data=dict(data, seconds=data_seconds), scale=dataclasses.asdict(scale), gpu=GPU,
                   full_run=FULL_RUN, commands=COMMANDS, config_overrides=config_overrides or {},
                   evaluation=report["sets"], peak_memory_gib=_peak_memory_gib(),
                   seconds=time.perf_counter() - start)
    if result_name:
        summary["result_file"] = save_result(result_name, {k: v for k, v in summary.items() if k != "evaluation"}
                                             | {"evaluation_table": evaluation_table})
    print("\n".join(evaluation_table + [""] + table), flush=True)
    return summary
