"""Regenerates every figure README.md and docs/*.md cite, at the current commit (`make figures` runs it).

  python bench/all.py                          # every run below, then the tables (refuses a dirty tree)
  python bench/all.py --only=verification,ijb  # some runs, then the tables
  python bench/all.py --list                   # the runs, their commands and expected minutes
  python bench/all.py --tables_only            # only rewrite the tables from docs/results/*.json

Each run writes its docs/results/NAME.json (results.save_result: command, date, CPU model and cores, load average,
git revision); then bench/tables.py rewrites every table between ``<!-- table:NAME -->`` and ``<!-- /table -->``
from those files. Run it on an otherwise idle machine: timings under contention are not comparable (each file keeps
the 1-minute load average). The code must be committed first (``--allow_dirty`` to try it anyway: the files then
say "-dirty" and tests/test_figures.py does not accept them). Runs that need what the repository does not hold
are skipped unless given: ``--photos=FOLDER`` (photographs with faces, for the detector figures) and
``--scipy18_python=PATH`` (a Python with scipy 1.8.1: see docs/checks/scipy18_interp.py).
"""
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tables  # noqa: E402  (bench/tables.py, beside this file)

FLAGS = flags.FLAGS
flags.DEFINE_list("only", [], "Result names to regenerate (default: all). See --list.")
flags.DEFINE_bool("list", False, "Print the runs and their expected minutes, run nothing.")
flags.DEFINE_bool("tables_only", False, "Only rewrite the tables from the result files as they are.")
flags.DEFINE_bool("allow_dirty", False, "Run with uncommitted changes (the files record a -dirty revision).")
flags.DEFINE_string("photos", None, "Folder of photographs with faces, for the detector figures (skipped without).")
flags.DEFINE_string("scipy18_python", None, "Python with scipy 1.8.1 for docs/checks/scipy18_interp.py.")

SCRATCH = "/tmp/figures"   # the runs' outputs; emptied first, so that no run resumes an earlier one (timings)
PY = "python"   # replaced by this interpreter when run; the commands read as README prints them
# (result name, command, expected minutes on 2 idle CPU cores, the flag it needs: None, "photos" or "scipy18_python")
RUNS = [
    ("demo", "python tools/demo.py --output_dir=/tmp/figures/demo --save_result=demo", 6, None),
    ("demo_runs", "python bench/quick_demo.py --full --runs=3", 19, None),
    ("baselines", "python tools/demo.py --all_baselines --output_dir=/tmp/figures/baselines --save_result=baselines",
     13, None),
    ("quick_demo", "python bench/quick_demo.py", 12, None),
    ("quick_demo_40", "python bench/quick_demo.py --steps=40", 10, None),
    ("train_step", "python bench/train_step.py", 6, None),
    ("pipeline", "python bench/pipeline.py", 2, None),
    ("convert", "python bench/convert.py", 1, None),
    ("synthetic", "python bench/synthetic.py", 1, None),
    ("verification", "python bench/verification.py", 1, None),
    ("inference", "python bench/inference.py", 1, None),
    ("onnx", "python bench/onnx_latency.py", 2, None),
    ("ijb", "python bench/ijb.py", 1, None),
    ("mask_placement", "python bench/mask_placement.py", 1, None),
    ("reference_fidelity", "python bench/reference_fidelity.py", 2, None),
    ("reference_fidelity_small", "python bench/reference_fidelity.py --small", 1, None),
    ("detect", "python bench/detect.py", 1, None),
    ("ijb_1n", "python bench/ijb_1n.py --workdirs=ArcFace=/tmp/figures/demo/arcface,"
     "MTArcFace=/tmp/figures/demo/mtarcface", 4, None),   # the models of the demo run of the same invocation
    ("gallery_real", "python bench/gallery.py --sizes= --real_model=/tmp/figures/demo/export --real_people=10000 "
     "--probes=256 --save_result=gallery_real", 3, None),    # the demo run's MTArcFace export
    ("gallery", "python bench/gallery.py --sizes=10000,100000,1000000 --probes=256 --exact_probes=64 "
     "--batch_people=20000 --save_result=gallery", 5, None),
    ("gallery_1m", "python bench/gallery.py --sizes= --index_only_sizes=1000000 --compare_size=100000 "
     "--compare_backends=faiss-pqfs,faiss-ivf,scann-ah --probes=256 --exact_probes=64 --batch_people=50000 "
     "--operating_points=64:1000,64:2000,32:2000,32:4000 --save_result=gallery_1m", 7, None),
    ("gallery_candidates", "python bench/gallery.py --sizes= --index_only_sizes=1000000 --probes=256 "
     "--exact_probes=16 --batch_people=50000 --operating_points=64:2000,64:8000,64:32000,32:2000,32:8000,32:32000 "
     "--save_result=gallery_candidates", 12, None),
    ("gallery_10m", "python bench/gallery.py --sizes= --index_only_sizes=10000000 --vectors_dir=/tmp/g10m "
     "--index_dtype=float16 --probes=256 --exact_probes=16 --batch_people=50000 "
     "--operating_points=64:2000,32:2000,32:4000 --save_result=gallery_10m", 40, None),
    ("gallery_libraries", "python bench/gallery.py --sizes= --compare_size=50000 --templates_size=20000 --probes=256 "
     "--exact_probes=64 --save_result=gallery_libraries", 2, None),
    ("gallery_scann_1m", "python bench/gallery.py --sizes= --compare_size=1000000 --compare_backends=faiss-pqfs,"
     "scann-ah --probes=256 --save_result=gallery_scann_1m", 8, None),
    ("gallery_mapped", "python bench/gallery_mapped.py --people=200000 --save_result=gallery_mapped", 3, None),
    ("partial_fc_computed", "python bench/partial_fc.py --measure=false --result=partial_fc_computed", 1, None),
    ("partial_fc_n1", "python bench/partial_fc.py --replicas=1 --max_gflop=12 --steps=2 --result=partial_fc_n1", 2,
     None),
    ("partial_fc_n2", "python bench/partial_fc.py --replicas=2 --max_gflop=12 --steps=2 --result=partial_fc_n2", 2,
     None),
    ("partial_fc_n4", "python bench/partial_fc.py --replicas=4 --max_gflop=12 --steps=2 --result=partial_fc_n4", 3,
     None),
    ("rehearsal", "python tools/rehearse.py --output_dir=/tmp/figures/rehearsal --save_result=rehearsal", 9, None),
    ("detect_realfaces", "python bench/detect_realfaces.py --images={photos}", 4, "photos"),
    ("crop_landmarks", "python bench/crop_landmarks.py --photos={photos}", 3, "photos"),
    ("scipy18_interp", "{scipy18_python} docs/checks/scipy18_interp.py --sets=100", 1, "scipy18_python"),
]


class FiguresError(Exception):
    """The figures cannot be regenerated as asked (the message says why and the fix)."""


def tree_is_dirty():
    """Returns True (bool) when tracked files differ from the commit (what results.git_revision calls dirty)."""
    from mtarcface_tf.results import git_revision   # pylint: disable=import-outside-toplevel
    return git_revision(tables.REPO).endswith("-dirty")


def selected_runs(only):
    """Returns the RUNS entries named in ``only`` (all when empty). Raises FiguresError on an unknown name."""
    names = [run[0] for run in RUNS]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise FiguresError(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(names)}")
    return [run for run in RUNS if not only or run[0] in only]


def command_line(command, needs):
    """Returns the command (str) with this interpreter and the given --photos / --scipy18_python, or None when
    what it needs was not given."""
    if needs and not FLAGS[needs].value:
        return None
    if command.startswith(PY + " "):
        command = sys.executable + command[len(PY):]
    return command.format(photos=FLAGS.photos, scipy18_python=FLAGS.scipy18_python)


def run_all(runs):
    """Empties ``SCRATCH``, then runs each (name, command, minutes, needs) in the repository root, one after the
    other; returns the list of (name, "done" | "skipped: ..." | "failed: ...", seconds)."""
    outcome = []
    shutil.rmtree(SCRATCH, ignore_errors=True)
    for name, command, minutes, needs in runs:
        line = command_line(command, needs)
        if line is None:
            outcome.append((name, f"skipped: needs --{needs}", 0.0))
            print(f"== {name}: skipped (needs --{needs})", flush=True)
            continue
        print(f"== {name} (about {minutes} min): {line}", flush=True)
        start = time.time()
        # The repository root on the path: benches comparing with a transcription import it from tests.support.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tables.REPO, os.environ.get("PYTHONPATH")])))
        result = subprocess.run(line, shell=True, cwd=tables.REPO, check=False, env=env)
        seconds = time.time() - start
        outcome.append((name, "done" if result.returncode == 0 else f"failed: exit {result.returncode}", seconds))
    return outcome


def main(argv):
    del argv
    if FLAGS.list:
        for name, command, minutes, needs in RUNS:
            print(f"{name:26s} {minutes:3d} min  {command}" + (f"  (needs --{needs})" if needs else ""))
        print(f"total about {sum(run[2] for run in RUNS)} min on 2 idle CPU cores")
        return 0
    try:
        runs = selected_runs(FLAGS.only)
        if not FLAGS.tables_only:
            if tree_is_dirty() and not FLAGS.allow_dirty:
                raise FiguresError("uncommitted changes: commit first, so that every figure names a revision "
                                   "(or --allow_dirty to try it)")
            outcome = run_all(runs)
            for name, status, seconds in outcome:
                print(f"{name:26s} {status} ({seconds:.0f} s)")
        for path in tables.rewrite_pages():
            print(f"rewrote the tables of {os.path.relpath(path, tables.REPO)}")
    except (FiguresError, FileNotFoundError, KeyError) as error:
        sys.exit(f"error: {error}")
    failed = [] if FLAGS.tables_only else [name for name, status, _ in outcome if status.startswith("failed")]
    if failed:
        sys.exit(f"error: failed runs: {', '.join(failed)} (their output is above)")
    return 0


if __name__ == "__main__":
    app.run(main)
