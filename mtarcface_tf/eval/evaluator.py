"""Periodic/offline verification on insightface .bin sets: clean, masked and mixed pairs, plus mask usage.

big_vision style: ``VerificationEvaluator.run(embed_fn)`` yields ``(name, value)`` metrics such as
``lfw/clean/accuracy``, ``lfw/masked/accuracy-flip``, ``lfw/mixed/tar@far=1e-3``, ``lfw/mask_usage/accuracy``,
and keeps the full result dicts in ``.results`` for ``mtarcface_tf.eval.report``.
"""
import os

import numpy as np

from mtarcface_tf.data.bin_pairs import load_bin, load_landmarks
from mtarcface_tf.data.masked_pairs import mask_labels_for, masked_variants
from mtarcface_tf.eval import embeddings as embeddings_lib
from mtarcface_tf.data.masked_pairs import PAPER_VARIANTS
from mtarcface_tf.eval import mask_usage, verification
from mtarcface_tf.export.embedder import as_embed_fn

DEFAULT_VARIANTS = PAPER_VARIANTS
MASK_METRICS = ("accuracy", "precision", "recall", "f1")


def mask_labels(variant, count):
    """Returns int32 [count] mask labels of a variant's images (``masked_pairs.mask_labels_for``), or None for
    "combined", whose images repeat the other variants' (their mask usage would be counted twice)."""
    return None if variant == "combined" else mask_labels_for(variant, count // 2)


def set_name(path):
    """Returns the name of a verification set from its file, e.g. ``/data/lfw.bin`` -> ``"lfw"``."""
    return os.path.splitext(os.path.basename(path))[0]


def _pairs(embeddings):
    return embeddings[0::2], embeddings[1::2]


class VerificationEvaluator:
    """Scores a model on verification .bin files; the images and their masked variants are built once and cached.

    Registered as type "verification" (``eval/registry.py``).

    Args:
      bins: paths of insightface verification .bin files: a sequence, or one comma-separated string (a config's
        ``bins``); none: ``run`` yields nothing. Raises FileNotFoundError naming a path that does not exist.
      masked: also evaluate the masked variants (``variants``); False evaluates clean pairs only.
      flip: also report the flip-test metrics (``-flip`` suffix).
      batch_size: images per model call.
      seed: seed of the masks painted onto the pairs (same masks every call).
      far: FAR of the TAR@FAR metric.
      nrof_folds: insightface's folds.
      variants: which outputs of ``masked_variants`` to score when ``masked``.
    """

    report_kind = "verification"   # its .results are report.write_report's ``results``

    def __init__(self, bins, masked=True, flip=True, batch_size=128, seed=0, far=verification.DEFAULT_FAR,
                 nrof_folds=10, variants=DEFAULT_VARIANTS):
        self.bins = self.paths(bins)
        for path in self.bins:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} does not exist; fix the path or drop it from the bins "
                                        f"(comma-separated .bin files)")
        self.masked = masked
        self.flip = flip
        self.batch_size = batch_size
        self.seed = seed
        self.far = far
        self.nrof_folds = nrof_folds
        self.variants = tuple(variants) if masked else ("clean",)
        self.results = {}
        self._cache = {}

    @staticmethod
    def paths(bins):
        """Returns the list of paths of ``bins``: a sequence, or a comma-separated string (``"a.bin, b.bin"`` ->
        ``["a.bin", "b.bin"]``)."""
        if isinstance(bins, str):
            return [path.strip() for path in bins.split(",") if path.strip()]
        return [str(path) for path in bins]

    def _load(self, path, image_size):
        """Returns {variant: (images uint8 [2N, S, S, 3], issame bool [N])} at the model's input size S, loading
        ``path`` on first use (load_bin resizes other sizes with a warning, as insightface does)."""
        key = (path, image_size)
        if key not in self._cache:
            images, issame = load_bin(path, image_size=image_size)
            issame = np.asarray(issame, bool)
            if len(images) != 2 * len(issame):
                raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs; a verification .bin "
                                 f"holds 2 images per pair")
            if not self.masked:
                self._cache[key] = {"clean": (images, issame)}
            else:
                landmarks = load_landmarks(path, len(images), images.shape[1])
                available = masked_variants(images, issame, self.seed, landmarks=landmarks)
                missing = [v for v in self.variants if v not in available]
                if missing:
                    raise ValueError(f"masked_variants gives no {missing}; choose variants among {sorted(available)}")
                self._cache[key] = {v: available[v] for v in self.variants}
        return self._cache[key]

    def _score_variant(self, embed_fn, path, variant, images, issame):
        extracted = embeddings_lib.extract(embed_fn, images, self.batch_size, self.flip,
                                           desc=f"{set_name(path)}/{variant}")
        result = dict(plain=None, flip=None, issame=issame, mask_prob=extracted["mask_prob"],
                      mask_labels=mask_labels(variant, len(images)))
        kinds = ("plain", "flip") if self.flip else ("plain",)
        try:
            for kind in kinds:
                key = "embedding_flip" if kind == "flip" else "embedding"
                result[kind] = verification.evaluate(*_pairs(extracted[key]), issame, self.nrof_folds, self.far)
        except ValueError as err:  # e.g. NaN embeddings of a diverged model: say which set
            raise ValueError(f"{path} ({variant} pairs): {err}") from err
        return result

    def _metrics(self, name, variant, result):
        tar = f"tar@far={verification.far_label(self.far)}"
        for suffix, scores in (("", result["plain"]), ("-flip", result["flip"])):
            if scores is None:
                continue
            yield f"{name}/{variant}/accuracy{suffix}", scores["accuracy"]
            yield f"{name}/{variant}/accuracy_std{suffix}", scores["accuracy_std"]
            yield f"{name}/{variant}/{tar}{suffix}", scores["tar"]

    @staticmethod
    def _mask_usage(variants):
        scored = [r for r in variants.values() if r["mask_prob"] is not None and r["mask_labels"] is not None]
        if not scored:
            return None
        return mask_usage.mask_usage_metrics(np.concatenate([r["mask_prob"] for r in scored]),
                                             np.concatenate([r["mask_labels"] for r in scored]))

    def run(self, embed_fn):
        """Scores ``embed_fn`` on every set and variant; yields ``(name, float)`` and fills ``self.results``.

        Args:
          embed_fn: what ``export.embedder.as_embed_fn`` accepts (an ``EmbedFn``, a Keras model, a path).

        Yields:
          ``("SET/VARIANT/METRIC[-flip]", value)`` for accuracy, accuracy_std and tar@far=F, then
          ``("SET/mask_usage/METRIC", value)`` when the model has a mask head and masked variants are scored.

        ``self.results[SET]`` = dict(``path``, ``pairs``, ``variants`` = {variant: dict(``plain``, ``flip``:
        ``verification.evaluate`` dicts or None, ``issame``, ``mask_prob``, ``mask_labels``)}, ``mask_usage``).
        """
        embed_fn = as_embed_fn(embed_fn)
        self.results = {}
        for path in self.bins:
            name = set_name(path)
            variants = {}
            for variant, (images, issame) in self._load(path, embed_fn.input_size).items():
                variants[variant] = self._score_variant(embed_fn, path, variant, images, issame)
                yield from self._metrics(name, variant, variants[variant])
            usage = self._mask_usage(variants) if self.masked else None
            pairs = len(next(iter(variants.values()))["issame"])
            self.results[name] = dict(path=path, pairs=pairs, variants=variants, mask_usage=usage)
            if usage is not None:
                for metric in MASK_METRICS:
                    yield f"{name}/mask_usage/{metric}", usage[metric]
