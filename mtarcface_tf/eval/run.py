"""Evaluating one model source end to end: what ``tools/evaluate.py`` runs.

A source (SavedModel, training workdir or checkpoint) is embedded through ``export.embedder``; verification ``.bin``
sets and an IJB-B/C folder (1:1 and, with its 1:N lists, 1:N) are scored by their evaluators; the report (markdown,
JSON, plots) is written.
"""
import itertools
import logging
import os

from mtarcface_tf.eval import evaluator, ijb, ijb_1n, report
from mtarcface_tf.export.embedder import make_embed_fn

log = logging.getLogger(__name__)


def evaluate_source(source, output_dir, bins=(), ijb_dir=None, ijb_name="IJBC", far=1e-3, compare=(),
                    masked=True, flip=True, batch_size=128, seed=0, model_name="", identification=True,
                    index="exact"):
    """Evaluates ``source`` on ``bins`` and/or the IJB set in ``ijb_dir``; writes the report into ``output_dir``.

    Args:
      source: SavedModel directory, training workdir or checkpoint prefix (see ``export.embedder.make_embed_fn``).
      output_dir: where report.md, report.json and the plots go.
      bins: verification .bin paths; ijb_dir / ijb_name: an IJB-B/C folder and its meta-file prefix (IJBB, IJBC).
      far: false-accept rate of TAR@FAR and of the recommended threshold.
      compare: other report.json paths shown side by side.
      masked, flip, batch_size, seed: as the evaluators take them (masked/mixed variants, flip test, masks' seed).
      model_name: the model's name in the tables (default: the source's directory name).
      identification: with ``ijb_dir``, also the 1:N protocols (``ijb_1n``; the set's meta/*_1N_*.csv lists).
      index: the search index of 1:N ("exact", "ann", "auto": ``mtarcface_tf.search.index.make_index``).

    Returns:
      ``(report dict as written, text lines to print)``. Raises ValueError when there is nothing to evaluate, and
      the evaluators' and loaders' errors (ValueError / OSError subclasses) for unusable inputs.
    """
    if not bins and not ijb_dir:
        raise ValueError("nothing to evaluate: give --bins=A.bin,B.bin and/or --ijb=IJB_FOLDER")
    model_name = model_name or os.path.basename(os.path.normpath(source))
    others = {}
    for path in compare:
        other = report.load_report(path)
        others[other["model"] or os.path.basename(os.path.dirname(os.path.abspath(path)))] = other
    embed_fn = make_embed_fn(source)
    scorer = evaluator.VerificationEvaluator(list(bins), masked=masked, flip=flip, batch_size=batch_size, seed=seed,
                                             far=far)
    ijb_scorer = ijb.IJBEvaluator(ijb_dir or "", ijb_name, masked=masked, flip=flip, batch_size=batch_size,
                                  seed=seed)
    identifier = ijb_1n.IJB1NEvaluator(ijb_dir or "", ijb_name, masked=masked, flip=flip, batch_size=batch_size,
                                       seed=seed, index=index)
    if ijb_dir and identification:
        ijb_1n.read_lists(ijb_dir, ijb_name)   # a bad 1:N list fails before any embedding
    runs = [scorer.run(embed_fn)] + ([ijb_scorer.run(embed_fn)] if ijb_dir else [])
    runs += [identifier.run(embed_fn)] if ijb_dir and identification else []
    for name, value in itertools.chain(*runs):
        log.info("%s = %.5f", name, value)
    written = report.write_report(scorer.results, output_dir, far, others, model_name, ijb=ijb_scorer.results,
                                  ijb_1n=identifier.results)
    lines = [report.compare_table({model_name: written})] if bins else []
    lines += [report.ijb_table(written), report.ijb_1n_table(written),
              f"report written to {os.path.join(output_dir, 'report.md')}"]
    return written, lines
