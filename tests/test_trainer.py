"""train_and_evaluate and tools/train.py: a run, resume after kill -9, the NaN stop, a mismatched workdir."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.data import ijb_synth
from mtarcface_tf.eval import ijb
from mtarcface_tf.model.workdir import load_model
from mtarcface_tf.train.checkpoints import CheckpointError
from mtarcface_tf.train.trainer import TrainingError, train_and_evaluate
from tests.support import processes
from tests.support.tiny import tiny_config, write_tiny_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_records(tmp_path_factory.mktemp("records"))


def _events(workdir):
    """Returns {tag: [(step, value or None)]} of the TensorBoard event files in WORKDIR/tb, per file."""
    per_file = []
    for path in sorted(glob.glob(os.path.join(workdir, "tb", "events.*"))):
        tags = {}
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.tensor.dtype == 1 else None
                tags.setdefault(value.tag, []).append((event.step, number))
        per_file.append(tags)
    return per_file


def test_run_writes_checkpoints_config_and_summaries(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(tiny_config(data_dir, steps=4), workdir)
    assert results["step"] == 4 and np.isfinite(results["loss"]) and results["skipped_records"] == 0
    assert os.path.isfile(os.path.join(workdir, "config.json"))
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-4")
    (events,) = _events(workdir)
    assert "train/augmented_inputs" in events and events["train/augmented_inputs"][0][0] == 0
    for tag in ("loss", "arcface_loss", "mask_loss", "reg_loss", "identity_accuracy", "mask_accuracy", "lr",
                "images_per_sec"):
        assert [s for s, _ in events[f"train/{tag}"]] == [1, 2, 3, 4], tag
    model, config = load_model(workdir)
    assert config.num_classes == 4 and model.has_mask_head
    out = model(np.zeros((2, 32, 32, 3), np.float32))
    assert out["embedding"].shape == (2, 16)


def test_mismatched_workdir_is_refused(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(data_dir, steps=1), workdir)
    other = tiny_config(data_dir, steps=1)
    other.model.embedding_size = 32
    with pytest.raises(CheckpointError, match=r"another architecture.*model.embedding_size: 16 -> 32.*--workdir"):
        train_and_evaluate(other, workdir)


def test_missing_data_is_one_clear_error(tmp_path):
    config = tiny_config(str(tmp_path / "nothing"), steps=1)
    with pytest.raises(TrainingError, match="nothing: no TFRecord files"):
        train_and_evaluate(config, str(tmp_path / "run"))
    config.data.train = ""
    with pytest.raises(TrainingError, match="config.data.train is empty"):
        train_and_evaluate(config, str(tmp_path / "run2"))


def test_comma_separated_eval_bins_parse_as_paths_and_are_checked_before_step_1(data_dir, tmp_path):
    from absl import flags
    from ml_collections import config_flags
    first = tmp_path / "lfw.bin"
    first.write_bytes(b"")
    argv = ["prog", f"--config={os.path.join(ROOT, 'configs', 'paper.py')}",
            f"--config.evals.verification.bins={first},{tmp_path}/cfp_fp.bin,agedb_30.bin"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    from mtarcface_tf.eval.evaluator import VerificationEvaluator
    assert VerificationEvaluator.paths(values.config.evals.verification.bins) == [
        str(first), f"{tmp_path}/cfp_fp.bin", "agedb_30.bin"]
    config = tiny_config(data_dir, steps=1)
    config.evals.verification.bins = values.config.evals.verification.bins
    with pytest.raises(TrainingError, match=rf"config.evals.verification: {tmp_path}/cfp_fp.bin does not exist"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not glob.glob(str(tmp_path / "run" / "checkpoints" / "ckpt-1*"))


def test_unknown_evaluator_type_or_setting_is_one_clear_error(data_dir, tmp_path):
    config = tiny_config(data_dir, steps=1)
    config.evals.ijb.type = "ijb_11"
    with pytest.raises(TrainingError,
                       match=r"^config.evals.ijb.type='ijb_11': choose one of ijb, ijb_1n, verification$"):
        train_and_evaluate(config, str(tmp_path / "run"))
    config = tiny_config(data_dir, steps=1)
    config.evals.verification.roots = "x"
    with pytest.raises(TrainingError, match=r"^config.evals.verification: roots not a setting of type "
                                            r"'verification'; its settings: bins, masked"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.isdir(tmp_path / "run" / "checkpoints")


def test_declared_ijb_evaluator_runs_during_training(data_dir, tmp_path):
    root = tmp_path / "IJBC"
    ijb_synth.generate_ijb(root, "IJBC", identities=3, templates_per_identity=2, media_per_template=1,
                           max_faces_per_media=2, impostors_per_template=2, seed=0)
    config = tiny_config(data_dir, steps=4)
    config.evals.ijb.update(root=str(root), every=2, batch_size=16, masked=False)
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(config, workdir)
    assert set(results) >= {f"IJBC/clean/tar@far={far:.0e}" for far in ijb.FARS}
    assert not any(name.startswith("IJBC/masked") for name in results)
    (events,) = _events(workdir)
    assert [s for s, _ in events["eval/IJBC/clean/tar@far=1e-01"]] == [2, 4]   # every 2 steps and at the end
    # The trained model's IJB figures equal an evaluation of the saved model outside training.
    model, _ = load_model(workdir)
    again = dict(ijb.IJBEvaluator(str(root), "IJBC", masked=False, batch_size=16).run(model))
    assert again == pytest.approx({k: v for k, v in results.items() if k.startswith("IJBC/")})


def test_diverging_run_stops_after_max_nonfinite(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(data_dir, steps=1)
    train_and_evaluate(config, workdir)                         # a good checkpoint at step 1
    config.num_steps, config.max_nonfinite = 30, 3
    config.optimizer.update(name="sgd", learning_rate=1e30, momentum=0.0)
    with pytest.raises(TrainingError, match="3 non-finite losses in a row.*last good checkpoint"):
        train_and_evaluate(config, workdir)
    assert os.path.isfile(os.path.join(workdir, "checkpoints", "ckpt-1.index"))


def _tool(config_file, workdir, *overrides):
    env = dict(os.environ, PYTHONPATH=processes.python_path(), CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="2")
    return [sys.executable, os.path.join(ROOT, "tools", "train.py"), f"--config={config_file}",
            f"--workdir={workdir}", *overrides], env


@pytest.mark.slow   # slow tier (a multi-process or XLA run of over half a minute on 2 idle cores)
def test_resume_after_kill_9_continues_step_and_schedule(data_dir, tmp_path):
    config_file = tmp_path / "cfg.py"
    config_file.write_text(
        "from tests.support.tiny import tiny_config\n"
        "def get_config():\n"
        f"    c = tiny_config({str(data_dir)!r}, steps=400)\n"
        "    c.optimizer.update(schedule='piecewise', boundaries=(2,), reference_batch_size=8, decay_factor=0.5)\n"
        "    return c\n")
    workdir = str(tmp_path / "run")
    command, env = _tool(config_file, workdir)
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")) and time.time() < deadline:
        assert first.poll() is None, "the first run ended before its first checkpoint"
        time.sleep(0.05)
    time.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = int(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).rsplit("-", 1)[1])
    assert 2 <= killed_at < 400

    command, env = _tool(config_file, workdir, f"--config.num_steps={killed_at + 3}")
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stderr and f"at step {killed_at} " in second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["step"] == killed_at + 3

    second_events = _events(workdir)[-1]
    steps = sorted({s for values in second_events.values() for s, _ in values})
    assert 0 not in steps and steps[0] == killed_at
    lrs = dict(second_events["train/lr"])
    assert sorted(lrs) == [killed_at + 1, killed_at + 2, killed_at + 3]
    # The rate logged at step s is the one update s applied: the schedule at s - 1 optimizer iterations. Every
    # update after a resume from step >= 2 runs past the boundary; a schedule restarted at 0 would not.
    assert all(v == pytest.approx(2e-3 * 0.5) for v in lrs.values())


def test_tool_prints_one_line_for_user_errors(tmp_path):
    command, env = _tool(os.path.join(ROOT, "configs", "tiny.py"), str(tmp_path / "run"),
                         "--config.data.train=/no/such/records")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: /no/such/records: no TFRecord files")


@pytest.mark.slow
def test_paper_config_runs_its_real_code_path(data_dir, tmp_path):
    command, env = _tool(os.path.join(ROOT, "configs", "paper.py"), str(tmp_path / "paper"),
                         f"--config.data.train={data_dir}", "--config.batch_size=8", "--config.num_steps=2",
                         "--config.jit_compile=False")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["step"] == 2 and np.isfinite(results["loss"])
    assert json.load(open(tmp_path / "paper" / "config.json"))["num_classes"] == 85742


@pytest.mark.slow   # slow tier: a training process signalled mid-run
def test_sigterm_saves_the_current_step_and_exits_cleanly(data_dir, tmp_path):
    config_file = tmp_path / "cfg.py"
    config_file.write_text(
        "from tests.support.tiny import tiny_config\n"
        "def get_config():\n"
        f"    c = tiny_config({str(data_dir)!r}, steps=100000)\n"
        "    c.checkpoint_every = 3\n"
        "    return c\n")
    workdir = str(tmp_path / "run")
    command, env = _tool(config_file, workdir)
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # The first checkpoint is written inside the training loop, where the handlers are installed.
    while not glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")) and time.time() < deadline:
        assert run.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr[-2000:]
    assert "SIGTERM received: saving at step" in stderr
    saved = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    assert saved is not None
    assert int(saved.rsplit("-", 1)[1]) == json.loads(stdout.strip().splitlines()[-1])["step"] > 0
