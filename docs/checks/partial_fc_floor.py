"""The float32 floor under tests/test_partial_fc.py's exactness bounds (the sharded head against the mirrored one).

  PYTHONPATH=. python docs/checks/partial_fc_floor.py REPLICAS [PERMUTATION_SEED]

Runs the test's 5 SGD-momentum steps three times on REPLICAS virtual CPU devices: the mirrored head, the sharded head
at rate 1, and the mirrored head again with its classes relabelled by a random permutation (kernel columns and labels
permuted: the same mathematics in another summation order). Prints, for the sharded and the relabelled run against
the first, the relative differences the test bounds: per step the loss and its terms, the first step's backbone
gradient (whole and the worst variable), the backbone after 5 steps (whole and the worst variable) and the centres.
Where the relabelled mirrored run differs as much as the sharded one, the bound is float32's, not the sharded head's.
"""
import pathlib
import sys
import tempfile

import numpy as np

from tests import test_partial_fc as exact

_RELABELLED = {
    'for head in ("mirrored", "sharded"):':
        'perm = np.random.default_rng(SEED).permutation(CLASSES)\nfor head in ("mirrored", "sharded", "relabelled"):',
    'config.model.head = head': 'config.model.head = "mirrored" if head == "relabelled" else head',
    '    else:\n        for v, value in zip':
        '    elif head == "relabelled":\n'
        '        for v, value in zip(model.backbone.trainable_variables, start):\n'
        '            v.assign(value)\n'
        '        model.arcface.kernel.assign(kernel[:, np.argsort(perm)])\n'
        '    else:\n        for v, value in zip',
    '"identity": per_replica(strategy, labels)':
        '"identity": per_replica(strategy, perm[labels].astype(np.int32) if head == "relabelled" else labels)',
    'run["centres"] = (model.arcface.kernel.numpy().T if head == "mirrored"':
        'run["centres"] = (model.arcface.kernel.numpy()[:, perm].T if head == "relabelled" else '
        'model.arcface.kernel.numpy().T if head == "mirrored"',
}


def main(replicas, seed):
    script = exact._EXACT
    for old, new in _RELABELLED.items():
        assert old in script, f"tests/test_partial_fc.py's script changed: {old!r} not found"
        script = script.replace(old, new.replace("SEED", str(seed)))
    with tempfile.TemporaryDirectory() as tmp:
        out = exact._run(script, replicas, pathlib.Path(tmp))
    reference = out["mirrored"]
    rms = [np.sqrt(np.mean(np.square(delta))) for delta in reference["delta"]]
    moved = [i for i, value in enumerate(rms) if value > 1e-3 * max(rms)]
    for name in ("sharded", "relabelled"):
        run = out[name]
        loss = np.abs(np.subtract(run["loss"], reference["loss"])) / np.abs(reference["loss"])
        print(f"{replicas} replicas, {name}: loss [total, arcface, reg, mask] per step\n"
              f"{np.array2string(loss, precision=2)}")
        for key in ("delta", "weights"):
            whole = exact._relative(np.concatenate(run[key]), np.concatenate(reference[key]))
            worst = max(exact._relative(run[key][i], reference[key][i]) for i in moved)
            print(f"  {key}: whole {whole:.2e}, worst variable {worst:.2e}")
        print(f"  centres {exact._relative(run['centres'], reference['centres']):.2e}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 11)
