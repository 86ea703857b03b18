"""README's and docs/*.md's tables, rendered from the result files (docs/results/*.json), so none can drift.

A page marks each generated table with ``<!-- table:NAME -->`` ... ``<!-- /table -->``; ``TABLES[NAME]`` renders
its markdown from the result files. ``bench/all.py`` rewrites every marked block; tests/test_figures.py fails when a
block differs from what its files give.

  python bench/tables.py            # rewrite the marked tables of README.md and docs/*.md from docs/results/
"""
import functools
import glob
import json
import os
import re
import sys

from mtarcface_tf.search.index import MIN_CANDIDATES, pq_fast_scan_codes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "docs", "results")
PAGES = ["README.md", "docs/*.md"]
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def load(name, results_dir=RESULTS):
    """Returns the record (dict) of ``results_dir/NAME.json``."""
    with open(os.path.join(results_dir, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def source(*records):
    """Returns the italic line naming where the figures come from: file, command, revision, date, machine, load."""
    parts = [f"`docs/results/{r['name']}.json`: `{r['command']}`, revision "
             f"{r['git_revision']}, {r['date']}, {r['machine'].split(', ')[0]}, load {r['load_average_1min']}"
             for r in records]
    return "_From " + "; ".join(parts) + "._"


def _same(flag):
    return "identical" if flag else "NOT identical"


def _pct(value):
    return "–" if value is None else f"{100 * value:.1f}"


def demo_table(results_dir=RESULTS, name="demo"):
    """The demo's comparison table as the run printed it, with its recognition line and source."""
    record = load(name, results_dir)
    figures = record["figures"]
    lines = [figures["table"], ""]
    recognition = figures.get("recognition", {})
    if "probes_found" in recognition:
        lines += [f"Recognition: {_pct(recognition['identified'])}% of {recognition['queries']} masked photos "
                  f"identified ({recognition['probes_found']} faces found by {recognition['detector']}; "
                  f"{_pct(recognition['identified_of_found'])}% of those), mask detected on "
                  f"{_pct(recognition['mask_detected'])}% of the found faces.", ""]
    lines += [f"Total time: {figures['seconds']:.0f} s.", ""]
    return "\n".join(lines + [source(record)])


def baselines_table(results_dir=RESULTS):
    """The four models of ``tools/demo.py --all_baselines`` side by side."""
    return demo_table(results_dir, "baselines")


def demo_runs_table(results_dir=RESULTS, name="demo_runs"):
    """Min / mean / max over seeded runs of each model's accuracy and TAR (bench/quick_demo.py)."""
    record = load(name, results_dir)
    figures = record["figures"]
    far = f"{figures.get('far', 1e-3):.0e}".replace("e-0", "e-")
    spread = figures["spread"]
    lines = [f"| model | pairs | accuracy % (min / mean / max) | TAR@FAR={far} % (min / mean / max) |",
             "|---|---|---|---|"]
    for key in sorted(k for k in spread if k.startswith("accuracy/")):
        _, model, variant = key.split("/")
        acc, tar = spread[key], spread[f"tar/{model}/{variant}"]
        lines.append(f"| {model} | {variant} | " + " / ".join(_pct(v) for v in acc) + " | "
                     + " / ".join(_pct(v) for v in tar) + " |")
    margins = [run["margin"] for run in figures["runs"]]
    lines += ["", f"{len(margins)} runs (seeds 0–{len(margins) - 1}); ArcFace's accuracy drop under masks minus "
                  f"MTArcFace's (clean − masked plus clean − mixed): {_pct(min(margins))} to {_pct(max(margins))} "
                  f"points, mean {_pct(figures['mean_margin'])}.", "", source(record)]
    return "\n".join(lines)


def quick_demo_table(results_dir=RESULTS):
    """The quick demo's margin (ArcFace's drop under masks minus MTArcFace's) over its seeded runs, at 80 and at 40
    steps."""
    records = [load(name, results_dir) for name in ("quick_demo", "quick_demo_40")]
    lines = ["| quick demo steps | runs | ArcFace's drop minus MTArcFace's, points: min | mean | sd | max |",
             "|---|---|---|---|---|---|"]
    for record in records:
        figures = record["figures"]
        margins = [run["margin"] for run in figures["runs"]]
        lines.append(f"| {figures['steps']} | {len(margins)} | {_pct(min(margins))} | "
                     f"{_pct(figures['mean_margin'])} | {_pct(figures.get('stdev_margin'))} | {_pct(max(margins))} |")
    return "\n".join(lines + ["", source(*records)])


def train_step_table(results_dir=RESULTS):
    """One LResNet-50 training step: the reference-style step against ours in float32 and mixed_bfloat16."""
    record = load("train_step", results_dir)
    f = record["figures"]
    rows = [("reference-style (JPEG decode + BGR + flip inside the step, no XLA, float32)", "ref", None),
            ("this project, float32 (the default)", "ours_float32", "speedup_ours_float32_vs_ref_float32"),
            ("this project, `--config.mixed_precision=mixed_bfloat16`", "ours_mixed_bfloat16",
             "speedup_ours_mixed_bfloat16_vs_ref_float32")]
    lines = [f"| step (LResNet-50, 112×112, batch {f['batch']}, {f['num_classes']:,} classes) | img/s | vs reference "
             "| peak memory |", "|---|---|---|---|"]
    for label, key, speedup in rows:
        ratio = f[speedup] if speedup else 1.0
        lines.append(f"| {label} | {f[key + '_img_s']:.2f} | {ratio:.2f}× | {f[key + '_peak_mb'] / 1000:.1f} GB |")
    return "\n".join(lines + ["", source(record)])


def measured_table(results_dir=RESULTS):
    """The other speed figures, one row per bench."""
    r = {name: load(name, results_dir) for name in
         ("pipeline", "convert", "synthetic", "verification", "inference", "onnx", "ijb")}
    p, c, s, v = (r[n]["figures"] for n in ("pipeline", "convert", "synthetic", "verification"))
    i, o, j = (r[n]["figures"] for n in ("inference", "onnx", "ijb"))
    rows = [
        ("input pipeline, 112×112, batch 128: decode only / masks fitted to landmarks / template masks",
         f"{p['decode_only_img_s']:,.0f} / {p['with_masks_img_s']:,.0f} / {p['template_masks_img_s']:,.0f} img/s "
         f"(masks cost {_pct(p['mask_cost'])}%)", "pipeline"),
        (f"RecordIO → TFRecord conversion, {c['workers']} workers, {c['records']:,} records",
         f"{c['records_per_s']:,.0f} records/s", "convert"),
        (f"SynthFaces generation at {s['image_size']}×{s['image_size']}, {s['workers']} workers",
         f"{s['faces_per_s']:,.0f} faces/s (one process: {s['single_process_faces_per_s']:,.0f})", "synthetic"),
        (f"verification protocol on {v['pairs']:,} pairs, vectorised vs loop",
         f"{v['vectorised_s']:.3f} s vs {v['loop_s']:.2f} s ({v['speedup']:.0f}×, {_same(v['identical'])})",
         "verification"),
        ("batch-1 latency, LResNet-50: SavedModel / Keras in `tf.function` / Keras eager",
         f"{i['saved_model_batch1_ms']:.0f} / {i['keras_graph_batch1_ms']:.0f} / {i['keras_eager_batch1_ms']:.0f} ms",
         "inference"),
        ("LResNet-50 batch 1 / batch 64, SavedModel vs onnxruntime",
         f"{o['saved_model_batch1_ms']:.0f} vs {o['onnxruntime_batch1_ms']:.0f} ms / "
         f"{o['saved_model_batch64_ms'] / 1000:.2f} vs {o['onnxruntime_batch64_ms'] / 1000:.2f} s", "onnx_latency"),
        (f"IJB-C-sized pooling + scores + TAR@FAR ({j['faces']:,} faces, {j['pairs']:,} pairs), vectorised vs loop",
         f"{j['speedup_total']}× ({_same(j['identical'])})", "ijb"),
    ]
    lines = ["| what | figure | command |", "|---|---|---|"]
    lines += [f"| {what} | {figure} | `python bench/{bench}.py` |" for what, figure, bench in rows]
    return "\n".join(lines + ["", source(*r.values())])


def mask_placement_table(results_dir=RESULTS):
    """Where masks land on SynthFaces in large poses, template placement against landmark-fitted placement."""
    record = load("mask_placement", results_dir)
    f = record["figures"]
    lines = ["| placement | masks right | nose tip covered | both mouth corners covered | both eye centres untouched |",
             "|---|---|---|---|---|"]
    for key in ("template", "landmarks"):
        lines.append(f"| {key} | " + " | ".join(f"{_pct(f[key][k])}%" for k in
                                                ("all", "nose", "mouth_corners", "eyes_untouched")) + " |")
    return "\n".join(lines + ["", source(record)])


def _ijb_1n_row(label, values, extra=()):
    return f"| {label} | " + " | ".join([_pct(value) for value in values] + list(extra)) + " |"


def ijb_1n_scale_table(results_dir=RESULTS):
    """IJB 1:N at IJB-C's size on random features: exact against each ANN backend, and the transcription's time."""
    record = load("ijb_1n", results_dir)
    f = record["figures"]["protocol_scale"]
    def columns(rates):
        return rates["top"]["1"], rates["tpir"]["1e-02"], rates["fnir"]["G1"]["1e-02"]
    lines = [f"| search ({f['ann_probes']:,} probes) | top-1 | TPIR@FPIR=1e-2 | G1 FNIR@FPIR=1e-2 | "
             "largest difference from exact, points |", "|---|---|---|---|---|",
             _ijb_1n_row("exact", columns(f["exact"]), ["–"])]
    for backend, rates in f["ann"].items():
        lines.append(_ijb_1n_row(f"ANN {backend}", columns(rates), [f"{rates['max_points']:.2f}"]))
    lines += ["", f"All {f['probes']:,} probes, closed set: the loop transcription {f['transcription_s']:.1f} s, the "
                  f"store's exact index {f['exact_closed_set_s']:.1f} s ({f['speedup']}×), figures "
                  f"{_same(f['identical'])}.", "", source(record)]
    return "\n".join(lines)


def ijb_1n_models_table(results_dir=RESULTS):
    """IJB 1:N of the demo's two models on the synthetic IJB-C set, clean and masked probes."""
    record = load("ijb_1n", results_dir)
    f = record["figures"]["synthetic_set"]
    def columns(rates):
        return (rates["top"]["1"], rates["top"]["5"], rates["tpir"]["1e-02"], rates["tpir"]["1e-01"],
                rates["fnir"]["G1"]["1e-02"], rates["fnir"]["G1"]["1e-01"], rates["fnir"]["G2"]["1e-02"],
                rates["fnir"]["G2"]["1e-01"])
    lines = ["| model | probes | top-1 | top-5 | TPIR@FPIR=1e-2 | TPIR@FPIR=1e-1 | G1 FNIR@1e-2 | G1 FNIR@1e-1 | "
             "G2 FNIR@1e-2 | G2 FNIR@1e-1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    ann = []
    for model, by_probe in f["models"].items():
        lines += [_ijb_1n_row(f"{model} | {probes}", columns(by_probe[probes])) for probes in ("clean", "masked")]
        ann += list(by_probe.get("ann_max_points", {}).values())
    lines += ["", f"{f['identities']} identities (seed {f['seed']}): {f['faces']} faces, {f['probes']} probe "
                  f"templates; largest difference of an ANN backend from exact: {max(ann, default=0):.2f} points.",
              "", source(record)]
    return "\n".join(lines)


def _ms(timing):
    return f"{timing['p50_ms']:,.1f} / {timing['p99_ms']:,.1f}"


def _ratio(value):
    """A speed-up as text: whole times, or one decimal below 1x (0.3x, not 0x)."""
    return f"{value:.0f}x" if value >= 1 else f"{value:.1f}x"


def _recall(row, at=1):
    parts = [row.get(f"{prefix}recall_at_{at}") for prefix in ("", "mated_", "non_mated_")]
    return " / ".join("–" if value is None else f"{value:.3f}" for value in parts)


def _gallery_row(label, rate, row, file_gib=None):
    ann = row.get("ann")
    ram = f"{row['index_bytes'] / 2**20:,.0f} MiB" + (f" + {file_gib:.1f} GiB file" if file_gib else "")
    cells = [label, rate, f"{row['ann_build_seconds']:.1f}", ram, f"{row['max_rss_gib']:.1f} GiB", _ms(row["exact"]),
             f"{row['exact']['batched_ms_per_query']:.1f}"]
    if ann:
        batched = row["exact"]["batched_ms_per_query"] / ann["batched_ms_per_query"]
        cells += [_ms(ann), f"{ann['batched_ms_per_query']:.1f}", f"{row['speedup_single']:.1f}x / {_ratio(batched)}",
                  _recall(row), f"{row['recall_at_10']:.3f}", f"{row['tpir_exact']:.3f} / {row['tpir_ann']:.3f}"]
    else:
        cells += ["exact below the ANN threshold", "", "", "", "", f"{row['tpir_exact']:.3f} / –"]
    return "| " + " | ".join(cells) + " |"


def gallery_table(results_dir=RESULTS):
    """1:N search through the gallery store (bench/gallery.py --sizes) and through the index alone (--index_only)."""
    store = load("gallery", results_dir)
    index_only = [load(name, results_dir) for name in ("gallery_1m", "gallery_10m")]
    lines = ["| people | enrol people/s | ANN build s | index RAM | max RSS | exact p50 / p99 ms | exact ms/query (64) "
             "| ANN p50 / p99 ms | ANN ms/query (64) | speed-up single (p50) / batched | recall@1 all / mated / "
             "non-mated | recall@10 | TPIR exact / ANN |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in store["figures"]["sizes"].values():
        lines.append(_gallery_row(f"{row['people']:,}", f"{row['enrol_people_per_s']:,.0f}", row))
    for record in index_only:
        row_bytes = record["figures"]["dim"] * (2 if record["figures"]["index_dtype"] == "float16" else 4)
        for row in record["figures"].get("index_only", {}).values():
            mapped = row.get("vectors_memory_mapped")
            lines.append(_gallery_row(f"{row['people']:,} (index only{', vectors memory-mapped' if mapped else ''})",
                                      f"({row['index_add_people_per_s']:,.0f} index adds/s)", row,
                                      file_gib=row["people"] * row_bytes / 2**30 if mapped else None))
    backend = store["figures"]["backend"]
    lines += ["", f"ANN backend `{backend}`, re-ranking {store['figures']['rerank']} candidates per result "
                  f"({store['figures'].get('min_candidates', MIN_CANDIDATES)} at least); {store['figures']['dtype']} "
                  f"blobs, {store['figures']['index_dtype']} index.", "",
              source(store, *index_only)]
    return "\n".join(lines)


def gallery_points_table(results_dir=RESULTS, names=("gallery_1m", "gallery_10m")):
    """The default fast scan and its retuned operating points (bench/gallery.py --operating_points) on the same
    index-only galleries and probes, from the result files ``names``: PQ code bytes and candidates against latency,
    RAM and recall."""
    records = [load(name, results_dir) for name in names]
    lines = ["| people | PQ code bytes | candidates (at least) | index RAM | ANN p50 / p99 ms | ANN ms/query (64) | "
             "speed-up single (p50) / batched | recall@1 all / mated / non-mated | recall@10 | TPIR exact / ANN |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for record in records:
        figures = record["figures"]
        for row in figures.get("index_only", {}).values():
            default = {"pq_bytes": figures.get("pq_bytes") or pq_fast_scan_codes(figures["dim"]) // 2,
                       "min_candidates": figures.get("min_candidates", MIN_CANDIDATES), **row}
            for point in [default, *row.get("operating_points", {}).values()]:
                ann, exact = point["ann"], row["exact"]
                lines.append(
                    f"| {row['people']:,} | {point['pq_bytes']} | {point['min_candidates']:,} | "
                    f"{point['index_bytes'] / 2**20:,.0f} MiB | {_ms(ann)} | {ann['batched_ms_per_query']:.1f} | "
                    f"{exact['p50_ms'] / ann['p50_ms']:.1f}x / "
                    f"{_ratio(exact['batched_ms_per_query'] / ann['batched_ms_per_query'])} | {_recall(point)} | "
                    f"{point['recall_at_10']:.3f} | {row['tpir_exact']:.3f} / {point['tpir_ann']:.3f} |")
    return "\n".join(lines + ["", source(*records)])


def gallery_libraries_table(results_dir=RESULTS):
    """The ANN libraries side by side on one synthetic gallery (bench/gallery.py --compare_size), and mean
    templates against max over images (--templates_size)."""
    records = [load(name, results_dir) for name in ("gallery_scann_1m", "gallery_1m", "gallery_libraries")]
    lines = ["| people | library | build s | ANN bytes | p50 / p99 ms | ms/query (64) | recall@1 all / mated / "
             "non-mated | recall@10 all | remove 100 ms | remove a quarter s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for record in records:
        compared = record["figures"].get("libraries")
        for library, row in (compared or {}).get("libraries", {}).items():
            lines.append(f"| {compared['people']:,} | {library} | {row['build_seconds']:.1f} | "
                         f"{row['ann_bytes'] / 1e6:.1f} MB | {_ms(row)} | {row['batched_ms_per_query']:.2f} | "
                         f"{_recall(row)} | {row['recall_at_10']:.3f} | {1000 * row['remove_100_seconds']:.1f} | "
                         f"{_seconds(row['remove_quarter_seconds'])} |")
    templates = records[-1]["figures"].get("templates")
    if templates:
        lines += ["", f"Templates, {templates['people']:,} people with {templates['images_per_person']} images each: "
                      f"one mean per person rank-1 {templates['mean']['rank1']:.3f}, TPIR@FPIR=0.01 "
                      f"{templates['mean']['tpir_at_fpir_0.01']:.3f}; every image with max-over-images rank-1 "
                      f"{templates['max_over_images']['rank1']:.3f}, TPIR "
                      f"{templates['max_over_images']['tpir_at_fpir_0.01']:.3f}."]
    return "\n".join(lines + ["", source(*records)])


def gallery_real_table(results_dir=RESULTS):
    """A trained model's embeddings against the generator fitted to them, searched alike (bench/gallery.py
    --real_model)."""
    record = load("gallery_real", results_dir)
    f = record["figures"]["real_model"]
    lines = ["| embeddings | genuine cosine | impostor cosine | exact rank-1 | exact TPIR@FPIR=0.01 | ANN TPIR | "
             "ANN recall@1 all / mated / non-mated | ANN recall@10 |", "|---|---|---|---|---|---|---|---|"]
    for label, row in (("the demo's MTArcFace", f["real"]),
                       (f"generator fitted (centre cosine {f['fitted_generator']['centre_cosine']:.2f})",
                        f["fitted_generator"])):
        (gm, gs), (im, ist) = row["genuine_cosine_mean_std"], row["impostor_cosine_mean_std"]
        lines.append(f"| {label} | {gm:.2f} ± {gs:.2f} | {im:.2f} ± {ist:.2f} | {row['rank1_exact']:.3f} | "
                     f"{row['tpir_exact']:.3f} | {row['tpir_ann']:.3f} | {_recall(row)} | {row['recall_at_10']:.3f} |")
    lines += ["", f"{f['people']:,} people of D = {f['dim']}, one enrolment and one probe image each; "
                  f"{record['figures'].get('backend', 'the default')} backend forced on (kind=\"ann\").", "",
              source(record)]
    return "\n".join(lines)


def crop_landmarks_table(results_dir=RESULTS):
    """Landmarks of aligned crops (bench/crop_landmarks.py): each method's accuracy on real-photo and posed SynthFaces
    crops, and the add_landmarks stage's throughput."""
    record = load("crop_landmarks", results_dir)
    f = record["figures"]
    methods = [("onet_fast_path", "O-Net refined, fallback RetinaFace (default)"),
               ("onet_fixed_box_fast_path", "O-Net fixed box, fallback RetinaFace"),
               ("onet_without_fallback", "O-Net refined, no fallback"), ("retinaface", "RetinaFace on each crop"),
               ("mtcnn", "MTCNN on each crop")]
    lines = ["| method | set (crops) | no landmarks (lost vs RetinaFace) | error mean / p90 / max px | "
             "to RetinaFace on the crop px | ms per crop |", "|---|---|---|---|---|---|"]
    for key, label in methods:
        for name, title in (("real_photos", "real photos"), ("synthfaces", "SynthFaces")):
            row = f[key].get(name)
            if not row:
                continue
            sent = row.get("sent_to_fallback")
            ms = f"{row['ms_per_crop']:.2f}" + ("" if sent is None else f" ({100 * sent:.0f}% to fallback)")
            lines.append(f"| {label} | {title} ({row['crops']}) | {row['no_face']} ({row['faces_lost']}) | "
                         f"{row['mean_error_px']:.2f} / {row['p90_error_px']:.2f} / {row['max_error_px']:.2f} | "
                         f"{row['mean_distance_to_retinaface_on_crop_px']:.2f} | {ms} |")
    stage, crops = f["stage"], load("rehearsal", results_dir)["figures"]["full_run"]["crops"]
    steady, onet = stage["one_worker_steady_crops_per_cpu_s"], f["onet_alone_one_pass"]["crops_per_cpu_s"]
    projected = stage["projected_crops_per_s_on_2_idle_cores"]
    crops_from = {"real_photos": "real-photo"}.get(stage["crops_from"], stage["crops_from"])
    marginal = f["stage_marginal"]
    ms1mv2_minutes = (marginal["start_up_s"] + crops / marginal["crops_per_s"]) / 60
    lines += ["", f"The whole stage (`add_landmarks`, {stage['workers']} spawned workers, {stage['records']:,} JPEG "
                  f"records of the {crops_from} crops, start-up included): {stage['seconds']:.1f} s = "
                  f"**{stage['crops_per_s']:,} crops/s**, {stage['crops_per_cpu_s']:,} crops per CPU-second; one "
                  f"worker's steady state {steady:,} crops per CPU-second; O-Net alone, one pass, {onet:,} crops per "
                  f"CPU-second. The same stage on {f['stage_large']['records']:,} records: "
                  f"{f['stage_large']['seconds']:.1f} s ({f['stage_large']['crops_per_s']:,} crops/s); the difference "
                  f"of the two runs is the stage's rate with start-up left out, **{marginal['crops_per_s']:,} "
                  f"crops/s** (start-up {marginal['start_up_s']:.1f} s). MS1MV2's {crops / 1e6:.1f}M crops at that "
                  f"rate, start-up included: about {ms1mv2_minutes:.0f} minutes (at the {stage['records']:,}-record "
                  f"run's rate {crops / stage['crops_per_s'] / 60:.0f}; at twice one worker's steady rate, "
                  f"{projected:,} crops/s, {crops / projected / 60:.0f}).", "", source(record)]
    return "\n".join(lines)


def rehearsal_table(results_dir=RESULTS):
    """The rehearsal of the paper path (tools/rehearse.py): each stage's time and throughput here and extrapolated to
    the full run, as the tool printed it."""
    record = load("rehearsal", results_dir)
    stage_table = record["figures"]["table"][:record["figures"]["table"].index("")]
    return "\n".join(stage_table + ["", f"The whole rehearsal took {record['figures']['seconds'] / 60:.1f} minutes.",
                                     "", source(record)])


def _seconds(value):
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def partial_fc_table(results_dir=RESULTS):
    """The Partial FC head step measured on N virtual CPU devices (bench/partial_fc.py --replicas=N): seconds per
    step of the sharded head at sampling rates 1.0 / 0.3 / 0.1 and of the mirrored head, for every C and N with a
    measured cell."""
    records = [load(f"partial_fc_n{n}", results_dir) for n in (1, 2, 4)]
    columns = [("sharded", 1.0), ("sharded", 0.3), ("sharded", 0.1), ("mirrored", 1.0)]
    lines = ["| C | N | sharded 1.0 | sharded 0.3 | sharded 0.1 | mirrored |", "|---:|---:|---:|---:|---:|---:|"]
    cells = {}
    for record in records:
        for row in record["figures"]["rows"]:
            cells[(row["classes"], row["replicas"], row["head"], row["rate"])] = row
    ratio = None
    for classes, replicas in sorted({key[:2] for key in cells}):
        rows = [cells.get((classes, replicas) + column) for column in columns]
        if not any(row and row["measured"] for row in rows):
            continue
        text = [("–" if row is None else _seconds(row["measured"]["seconds_per_step"]) if row["measured"]
                 else f"– ({row['computed']['gflops']:.0f} GFLOP)") for row in rows]
        lines.append(f"| {classes:,} | {replicas} | " + " | ".join(text) + " |")
        if rows[0] and rows[0]["measured"] and rows[3] and rows[3]["measured"]:
            sharded, mirrored = (row["measured"]["seconds_per_step"] for row in (rows[0], rows[3]))
            ratio = (classes, replicas, sharded / mirrored)
    if ratio:
        lines += ["", f"At C = {ratio[0]:,} on {ratio[1]} devices the sharded head's step takes {100 * ratio[2]:.0f}% "
                      "of the mirrored head's."]
    return "\n".join(lines + ["", source(*records)])


def results_index(results_dir=RESULTS):
    """Every result file: what ran, at which revision, when, on what machine, under what load."""
    lines = ["| file | command | revision | date | machine | load |", "|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        r = load(os.path.basename(path)[:-5], results_dir)
        lines.append(f"| [{r['name']}.json]({os.path.relpath(path, os.path.join(REPO, 'docs'))}) | "
                     f"`{r['command']}` | {r['git_revision']} | {r['date']} | {r['machine']} | "
                     f"{'–' if r['load_average_1min'] is None else r['load_average_1min']} |")
    return "\n".join(lines)


TABLES = {"demo": demo_table, "baselines": baselines_table, "demo_runs": demo_runs_table,
          "quick_demo": quick_demo_table, "train_step": train_step_table, "measured": measured_table,
          "mask_placement": mask_placement_table, "ijb_1n_scale": ijb_1n_scale_table,
          "ijb_1n_models": ijb_1n_models_table, "gallery": gallery_table, "gallery_libraries": gallery_libraries_table,
          "gallery_points": gallery_points_table,
          "gallery_candidates": functools.partial(gallery_points_table, names=("gallery_candidates",)),
          "partial_fc": partial_fc_table, "crop_landmarks": crop_landmarks_table,
          "rehearsal": rehearsal_table,
          "gallery_real": gallery_real_table, "results_index": results_index}


def pages(repo=REPO):
    """Returns the paths (list[str]) of README.md and docs/*.md."""
    return [path for pattern in PAGES for path in sorted(glob.glob(os.path.join(repo, pattern)))]


def rendered(text, results_dir=RESULTS):
    """Returns ``text`` with every marked block replaced by its table rendered from ``results_dir``.

    Raises KeyError naming an unknown table.
    """
    def replace(match):
        body = TABLES[match.group("name")](results_dir)
        return match.group(1) + body.rstrip("\n") + "\n" + match.group(4)
    return BLOCK.sub(replace, text)


def rewrite_pages(repo=REPO, results_dir=RESULTS):
    """Rewrites the marked tables of README.md and docs/*.md in place; returns the paths (list) that changed."""
    changed = []
    for path in pages(repo):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        new = rendered(text, results_dir)
        if new != text:
            with open(path + ".tmp", "w", encoding="utf-8") as handle:
                handle.write(new)
            os.replace(path + ".tmp", path)
            changed.append(path)
    return changed


if __name__ == "__main__":
    for changed_path in rewrite_pages():
        print(f"rewrote {os.path.relpath(changed_path, REPO)}")
    sys.exit(0)
