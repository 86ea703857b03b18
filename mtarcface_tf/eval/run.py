"""Evaluating one model source end to end: what ``tools/evaluate.py`` runs, and the demo after training.

A source (SavedModel, training workdir or checkpoint) is embedded through ``export.embedder``; the evaluators
declared in an evals config (``eval/registry.py``) score it; the report (markdown, JSON, plots) is written.
"""
import logging
import os

import ml_collections

from mtarcface_tf.eval import ijb_1n, registry, report
from mtarcface_tf.eval.verification import DEFAULT_FAR
from mtarcface_tf.export.embedder import make_embed_fn

log = logging.getLogger(__name__)


def evals_config(bins=(), ijb_dir=None, ijb_name="IJBC", far=DEFAULT_FAR, masked=True, flip=True, batch_size=128,
                 seed=0, identification=True, index="exact"):
    """Returns the evals config (``config.evals``'s form) of tools/evaluate.py's flags: a "verification" evaluator
    when ``bins`` are given, an "ijb" one when ``ijb_dir`` is (and with ``identification`` an "ijb_1n" one searching
    with ``index``); all with ``every=0`` (not a training run)."""
    evals = ml_collections.ConfigDict()
    common = dict(every=0, masked=masked, flip=flip, batch_size=batch_size, seed=seed)
    if bins:
        evals.verification = dict(type="verification", bins=",".join(bins), far=far, **common)
    if ijb_dir:
        evals.ijb = dict(type="ijb", root=ijb_dir, name=ijb_name, **common)
        if identification:
            evals.ijb_1n = dict(type="ijb_1n", root=ijb_dir, name=ijb_name, index=index, **common)
    return evals


def run_and_report(declared, embed_fn, output_dir, far=DEFAULT_FAR, compare=None, model_name=""):
    """Runs ``declared`` evaluators (``registry.build_evaluators``) on ``embed_fn``; writes their report.

    Args:
      declared: list of ``registry.Declared``; embed_fn: an ``EmbedFn`` (``export.embedder.make_embed_fn``).
      output_dir, far, compare, model_name: as ``report.write_report`` takes them.

    Returns:
      ``(report dict as written, {metric name: float})``.
    """
    metrics, kinds = {}, {}
    for entry in declared:
        for name, value in entry.evaluator.run(embed_fn):
            log.info("%s = %.5f", name, value)
            metrics[name] = float(value)
        kinds.setdefault(entry.evaluator.report_kind, {}).update(entry.evaluator.results)
    written = report.write_report(kinds.get("verification", {}), output_dir, far, compare, model_name,
                                  ijb=kinds.get("ijb"), ijb_1n=kinds.get("ijb_1n"))
    return written, metrics


def evaluate_source(source, output_dir, evals, far=DEFAULT_FAR, compare=(), model_name=""):
    """Evaluates ``source`` with the evaluators of ``evals`` (see ``evals_config``); writes the report there.

    Args:
      source: SavedModel directory, training workdir or checkpoint prefix (see ``export.embedder.make_embed_fn``).
      output_dir: where report.md, report.json and the plots go.
      evals: an evals config ({name: dict(type, every, settings...)}, ``eval/registry.py``).
      far: false-accept rate of the recommended threshold and of the tables' TAR column.
      compare: other report.json paths shown side by side.
      model_name: the model's name in the tables (default: the source's directory name).
      identification: with ``ijb_dir``, also the 1:N protocols (``ijb_1n``; the set's meta/*_1N_*.csv lists).
      index: the search index of 1:N ("exact", "ann", "auto": ``mtarcface_tf.search.index.make_index``).

    Returns:
      ``(report dict as written, text lines to print)``. Raises ValueError when there is nothing to evaluate, and
      the evaluators' and loaders' errors (ValueError / OSError subclasses) for unusable inputs.
    """
    if not evals:
        raise ValueError("nothing to evaluate: give --bins=A.bin,B.bin and/or --ijb=IJB_FOLDER")
    declared = registry.build_evaluators(evals)
    for entry in declared:   # a bad 1:N list fails before any embedding
        if entry.evaluator.report_kind == "ijb_1n" and entry.evaluator.root:
            ijb_1n.read_lists(entry.evaluator.root, entry.evaluator.name)
    model_name = model_name or os.path.basename(os.path.normpath(source))
    others = {}
    for path in compare:
        other = report.load_report(path)
        others[other["model"] or os.path.basename(os.path.dirname(os.path.abspath(path)))] = other
    written, _ = run_and_report(declared, make_embed_fn(source), output_dir, far, others, model_name)
    lines = [report.compare_table({model_name: written})] if written["sets"] else []
    lines += [report.ijb_table(written), report.ijb_1n_table(written),
              f"report written to {os.path.join(output_dir, 'report.md')}"]
    return written, lines
