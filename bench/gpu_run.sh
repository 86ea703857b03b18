#!/usr/bin/env bash
# LResNet-50 training-step throughput and MFU on a GPU machine that has JAX (CUDA), numpy and ml-dtypes but no
# TensorFlow, no Keras and no package registry: installs Keras and the few pure-python modules the model package
# needs from wheels/, installs this project without dependencies, then runs bench/train_step_jax.py at batch
# 256 and 512 (mixed_bfloat16, 1,000 classes) and once with the paper's 85,742-class head.
#
# Prepare wheels/ (git-ignored) on a machine with PyPI, from the repository root:
#   pip download --no-deps -d wheels keras==3.15.1 namex ml-collections absl-py rich markdown-it-py mdurl \
#       pygments packaging typing_extensions setuptools wheel
#   for py in 3.10 3.11 3.12 3.13; do pip download --no-deps -d wheels --only-binary=:all: \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --python-version $py optree PyYAML; done
# Run (repository root, wheels/ carried along):  bash bench/gpu_run.sh [output dir, default $OUT or out/]
# Extra benchmark flags for every run: BENCH_ARGS="--rounds=3" (BENCH_ARGS=--quick: a CPU smoke test of this script).
# Each run's log goes to <output dir>/jax_<name>.log; its last line is the benchmark's JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-${OUT:-out}}"
python="${PYTHON:-python3}"
read -r -a bench_args <<< "${BENCH_ARGS:-}"
export KERAS_BACKEND=jax
mkdir -p "$out_dir"

if [ ! -d wheels ]; then
  echo "bench/gpu_run.sh: wheels/ is missing; download it as this script's header says, then carry it along" >&2
  exit 1
fi
pip_offline=("$python" -m pip install --quiet --no-index --find-links wheels)
# Keras without its h5py requirement (only .h5 saving imports it); everything else it and the model package import.
"${pip_offline[@]}" --no-deps keras
"${pip_offline[@]}" namex optree absl-py rich packaging ml-collections
"${pip_offline[@]}" --no-deps .
"$python" -c "import sys, jax, keras, mtarcface_tf.model.build; assert 'tensorflow' not in sys.modules; \
print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__, keras.backend.backend())" \
  2>&1 | tail -1

run() {
  local name="$1"; shift
  echo "== $name: $*"
  "$python" bench/train_step_jax.py "$@" "${bench_args[@]}" 2>&1 | tee "$out_dir/jax_$name.log" | grep -v "^[IW]0000"
}
run b256 --batch=256
run b512 --batch=512
run b512_85742 --batch=512 --num_classes=85742
echo "== JSON lines"
for f in "$out_dir"/jax_*.log; do tail -n 1 "$f"; done
