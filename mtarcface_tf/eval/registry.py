"""Evaluators declared in the config, as big_vision does: ``config.evals.NAME = dict(type=TYPE, every=STEPS, ...)``.

``type`` picks a class of ``EVALUATORS``; ``every`` is how often the trainer runs it (in steps; 0: only at the end of
training); every other key is a keyword argument of that class. Each evaluator has ``run(embed_fn)`` yielding
``(name, value)`` and keeps its full results in ``.results`` for the report (``report_kind`` says which part).
An evaluator given no data (no ``bins``, no ``root``) yields nothing: a config can declare it switched off.
"""
import inspect
from typing import NamedTuple

from mtarcface_tf.eval.evaluator import VerificationEvaluator
from mtarcface_tf.eval.ijb import IJBEvaluator
from mtarcface_tf.eval.ijb_1n import IJB1NEvaluator

# A new evaluator is one line here: "type name": its class (a module of its own under eval/).
EVALUATORS = {
    "verification": VerificationEvaluator,   # insightface .bin sets: clean / masked / mixed pairs, mask usage
    "ijb": IJBEvaluator,                     # IJB-B/C 1:1 template verification, clean and masked probes
    "ijb_1n": IJB1NEvaluator,                # IJB-B/C 1:N identification, clean and masked probes
}
SCHEDULE_KEYS = ("type", "every")   # read by the registry and the trainer, not passed to the class


class Declared(NamedTuple):
    """One evaluator of the config: its name in ``config.evals``, how often it runs (steps, 0: at the end) and the
    evaluator object."""
    name: str
    every: int
    evaluator: object


def build_evaluators(evals, seed=0, extra_bins=()):
    """Builds the evaluators declared in ``evals`` (``config.evals``: {name: dict(type, every, kwargs...)}).

    Args:
      evals: mapping (ml_collections ConfigDict or dict) of evaluator name -> its declaration.
      seed: the masks' seed of an evaluator whose declaration gives none (the run's ``config.seed``).
      extra_bins: verification .bin paths added to every "verification" evaluator (the trainer's SynthFaces set).

    Returns:
      a list of ``Declared``, sorted by name. Raises ValueError in one line naming ``config.evals.NAME`` for an
      unknown type or key, or an input the evaluator refuses (e.g. a .bin that does not exist).
    """
    declared = []
    for name in sorted(evals):
        entry = dict(evals[name])
        kind = entry.get("type")
        if kind not in EVALUATORS:
            raise ValueError(f"config.evals.{name}.type={kind!r}: choose one of {', '.join(sorted(EVALUATORS))}")
        cls = EVALUATORS[kind]
        kwargs = {k: v for k, v in entry.items() if k not in SCHEDULE_KEYS}
        accepted = inspect.signature(cls).parameters
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"config.evals.{name}: {', '.join(unknown)} not a setting of type {kind!r}; its "
                             f"settings: {', '.join(accepted)}")
        if "seed" in accepted:
            kwargs.setdefault("seed", seed)
        if kind == "verification" and extra_bins:
            kwargs["bins"] = VerificationEvaluator.paths(kwargs.get("bins", "")) + list(extra_bins)
        try:
            declared.append(Declared(name, int(entry.get("every", 0)), cls(**kwargs)))
        except (ValueError, OSError) as err:
            raise ValueError(f"config.evals.{name}: {err}") from None
    return declared
