"""IJB-B / IJB-C 1:1 template verification as insightface's recognition/arcface_torch/eval_ijbc.py computes it.

The data set's own files, under ROOT: ``meta/{name}_face_tid_mid.txt`` (``image tid mid`` per face),
``meta/{name}_name_5pts_score.txt`` (``image x1 y1 ... x5 y5 score``, same face order), ``meta/{name}_template_pair_
label.txt`` (``tid1 tid2 label``) and ``loose_crop/IMAGE``; ``name`` is ``ijbc`` or ``ijbb``.

Per face: the loose crop warped onto the ArcFace template by its five points (Umeyama similarity, bilinear, black
border), embedded, plus the embedding of its mirror (flip test "F2": the two raw embeddings are added); the raw sum
keeps its norm ("N1") and is multiplied by the detection score ("D1"). Per template: faces of one media are
averaged, the media features summed, the sum L2-normalized. Per pair: the cosine of the two template features.
ROC as ``sklearn.metrics.roc_curve`` (the same arrays, from an unstable sort); TAR at each FAR is the TPR of the ROC
point whose FPR is nearest (ties: the largest TPR). Everything after the embeddings is vectorised: one sort and
grouped sums instead of one ``np.where`` per template, a bisection instead of a Python ``min`` over the ROC.

Masked protocol: every face of the probe (second) template of a pair is masked after alignment
(``masked_pairs.mask_all``: deterministic, by face position), the reference (first) template stays clean.
"""
import bisect
import os

import numpy as np
from sklearn.metrics import auc
from sklearn.preprocessing import normalize

from mtarcface_tf.data.masked_pairs import MASK_BATCH, mask_all
from mtarcface_tf.eval.embeddings import embed_with_flip
from mtarcface_tf.export.embedder import as_embed_fn
from mtarcface_tf.faces.align import TEMPLATE_SIZE, AlignmentError, align_face
from mtarcface_tf.images import ImageReadError, read_image_rgb
from mtarcface_tf.progress import progress_bar

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SCORE_CHUNK = 1024   # pairs scored at once: the temporaries stay in cache (the script's 100k do not)
LOOKUP_IDS = 2 ** 24   # template id ranges up to this use a lookup table (IJB-C's ids are below 200k)
NAMES = ("IJBB", "IJBC")


class IJBDataError(ValueError):
    """An IJB folder that cannot be read (missing or malformed file); the message names the file and the fix."""


def meta_path(root, name, kind):
    """Returns ``ROOT/meta/{name.lower()}_{kind}.txt`` (kind: face_tid_mid, template_pair_label, name_5pts_score)."""
    return os.path.join(os.fspath(root), "meta", f"{name.lower()}_{kind}.txt")


def _read_rows(path, columns):
    if not os.path.isfile(path):
        raise IJBDataError(f"{path}: not found; give --ijb=the folder holding meta/ and loose_crop/ (and "
                           f"--ijb_name=IJBB or IJBC to match the file names)")
    with open(path, encoding="utf-8") as handle:
        rows = [line.split() for line in handle if line.strip()]
    bad = next((i for i, row in enumerate(rows) if len(row) != columns), None)
    if bad is not None:
        raise IJBDataError(f"{path}: line {bad + 1} has {len(rows[bad])} fields, expected {columns}")
    return rows


def read_faces(root, name="IJBC"):
    """Reads the face lists of an IJB set (``face_tid_mid`` and ``name_5pts_score``: what 1:1 and 1:N share).

    Args:
      root: folder with ``meta/`` and ``loose_crop/``; name: "IJBB" or "IJBC" (the meta files' prefix, lower-cased).

    Returns:
      dict: ``images`` list of N file names (in loose_crop/), ``landmarks`` float32 [N, 5, 2] (x, y),
      ``scores`` float32 [N] detection scores, ``templates`` int64 [N], ``medias`` int64 [N].

    Raises:
      IJBDataError: a file is missing or malformed, or the two face lists disagree.
    """
    faces = _read_rows(meta_path(root, name, "face_tid_mid"), 3)
    points = _read_rows(meta_path(root, name, "name_5pts_score"), 12)
    if len(faces) != len(points) or any(a[0] != b[0] for a, b in zip(faces, points)):
        raise IJBDataError(f"{meta_path(root, name, 'face_tid_mid')} and {meta_path(root, name, 'name_5pts_score')}"
                           f" must list the same images in the same order")
    try:
        ids = np.array([row[1:] for row in faces], np.int64).reshape(-1, 2)
        numbers = np.array([row[1:] for row in points], np.float32).reshape(-1, 11)
    except ValueError as error:
        raise IJBDataError(f"{os.path.join(os.fspath(root), 'meta')}: a non-numeric field ({error})") from error
    return dict(images=[row[0] for row in faces], landmarks=numbers[:, :10].reshape(-1, 5, 2), scores=numbers[:, 10],
                templates=ids[:, 0], medias=ids[:, 1])


def read_ijb(root, name="IJBC"):
    """Reads the meta files of an IJB set for 1:1 verification.

    Args:
      root: folder with ``meta/`` and ``loose_crop/``.
      name: "IJBB" or "IJBC" (the prefix of the meta files, lower-cased).

    Returns:
      dict: ``read_faces``'s, plus ``pairs`` int64 [P, 2] template ids, ``labels`` int64 [P] (1 = same identity).

    Raises:
      IJBDataError: a file is missing or malformed, the two face lists disagree, or the pairs are of one kind.
    """
    meta = read_faces(root, name)
    pairs = _read_rows(meta_path(root, name, "template_pair_label"), 3)
    try:
        pair_ids = np.array(pairs, np.int64).reshape(-1, 3)
    except ValueError as error:
        raise IJBDataError(f"{meta_path(root, name, 'template_pair_label')}: a non-numeric field ({error})") from error
    unknown = np.setdiff1d(pair_ids[:, :2], meta["templates"])
    if unknown.size:
        raise IJBDataError(f"{meta_path(root, name, 'template_pair_label')}: templates {unknown[:5].tolist()} have "
                           f"no faces in {meta_path(root, name, 'face_tid_mid')}")
    same = pair_ids[:, 2] == 1
    if same.all() or not same.any():
        raise IJBDataError(f"{meta_path(root, name, 'template_pair_label')}: the labels (third column) must include "
                           f"both 1 (same identity) and 0 pairs: TAR@FAR needs both")
    return dict(meta, pairs=pair_ids[:, :2], labels=pair_ids[:, 2])


def load_aligned(root, meta, indices, image_size=TEMPLATE_SIZE):
    """Reads and aligns faces of an IJB set.

    Args:
      root: the set's folder; meta: from ``read_ijb``; indices: int face indices.
      image_size: side of the aligned crops (112: the protocol; the template is scaled for other sizes).

    Returns:
      uint8 [len(indices), image_size, image_size, 3] RGB aligned faces.
    """
    out = np.empty((len(indices), image_size, image_size, 3), np.uint8)
    for row, index in enumerate(indices):
        path = os.path.join(os.fspath(root), "loose_crop", meta["images"][index])
        try:
            image = read_image_rgb(path)
        except ImageReadError as error:
            raise IJBDataError(str(error)) from error
        try:
            out[row] = align_face(image, meta["landmarks"][index], image_size)
        except AlignmentError as error:
            raise IJBDataError(f"{path}: {error}") from error
    return out


def _embed(embed_fn, faces, flip):
    """Raw embeddings of faces (plus those of their mirrors when ``flip``): float32 [B, D]."""
    embeddings, flip_sum, _ = embed_with_flip(embed_fn, faces, flip)
    return flip_sum if flip else embeddings


def face_features(embed_fn, root, meta, indices, batch_size=128, flip=True, mask_seed=None, image_size=TEMPLATE_SIZE):
    """Embeds the faces ``indices`` of an IJB set; the flip test adds the raw embeddings of face and mirror.

    Args:
      embed_fn: callable uint8 RGB [B, S, S, 3] -> embeddings float32 [B, D] (or a tuple whose first item they
        are, as ``embeddings.EmbedFn``); raw embeddings keep the protocol's norm weighting.
      root, meta: the set (``read_ijb``).
      indices: int [M] face indices.
      batch_size: faces per call (with ``flip``, the call sees them and their mirrors).
      flip: add the embedding of the mirrored face.
      mask_seed: None for clean faces; else the seed of the masks painted on the aligned faces (mask of the k-th
        listed face depends only on the seed and k).
      image_size: side of the aligned faces (the model's input size).

    Returns:
      float32 [M, D].
    """
    indices = np.asarray(indices, np.int64)
    chunk = MASK_BATCH * max(1, -(-batch_size // MASK_BATCH))   # whole mask batches: masks fixed by position
    features = []
    for start in progress_bar(range(0, len(indices), chunk),
                              desc="masked faces" if mask_seed is not None else "faces", unit="batch"):
        faces = load_aligned(root, meta, indices[start:start + chunk], image_size)
        if mask_seed is not None:
            faces = mask_all(faces, mask_seed, first_batch=start // MASK_BATCH)
        features += [_embed(embed_fn, faces[i:i + batch_size], flip) for i in range(0, len(faces), batch_size)]
    return np.concatenate(features)


def weight_features(features, scores, norm_score=True, detector_score=True):
    """The protocol's face weighting: float32 [N, D] features (flip sums), scaled by the detection ``scores`` [N]
    when ``detector_score``; L2-normalized first unless ``norm_score`` (which keeps the norm as a quality weight)."""
    features = np.asarray(features, np.float32)
    if not norm_score:
        features = features / np.sqrt(np.sum(features ** 2, -1, keepdims=True))
    if detector_score:
        features = features * np.asarray(scores, np.float32)[:, None]
    return features


def _ordered_sums(rows, index, starts, counts):
    """Sums of groups of ``rows[index]`` ([R, D]; group g: index[starts[g]] .. index[starts[g] + counts[g] - 1]),
    added one row after the other as np.sum / np.mean over axis 0 do, so the float32 results are the same bit for
    bit (np.add.reduceat adds in another order). Groups go largest first, so that those still adding a k-th row are
    a prefix, added in place."""
    by_size = np.argsort(-counts, kind="stable")
    firsts, sizes = starts[by_size], counts[by_size]
    sums = rows[index[firsts]]   # fancy indexing: a new array
    for k in range(1, int(sizes[0])):
        adding = int(np.searchsorted(-sizes, -k))   # groups of more than k rows
        sums[:adding] += rows[index[firsts[:adding] + k]]
    unsorted = np.empty_like(sums)
    unsorted[by_size] = sums
    return unsorted


def _face_order(templates, medias):
    """int64 [N] face indices sorted by template id, then media id, then file position: one unstable sort of unique
    int64 keys (ids first replaced by their ranks where the raw ids would not fit)."""
    templates, medias = np.asarray(templates, np.int64), np.asarray(medias, np.int64)
    faces = len(templates)
    key_range = (int(templates.max()) + 1) * (int(medias.max()) + 1) * faces
    if min(templates.min(), medias.min()) < 0 or key_range >= 2 ** 63:
        templates, medias = (np.unique(ids, return_inverse=True)[1].astype(np.int64) for ids in (templates, medias))
    return np.argsort((templates * (int(medias.max()) + 1) + medias) * faces + np.arange(faces))


def template_features(features, templates, medias):
    """Media pooling then template pooling, vectorised.

    Args:
      features: float32 [N, D] weighted face features; templates, medias: int [N] ids of each face.

    Returns:
      ``(template_features float64 [T, D] L2-normalized, unique_templates int64 [T] sorted)``: per template the sum
      over its media (ascending id) of the mean of the media's faces (file order), in float32 as the script.
    """
    features = np.asarray(features, np.float32)
    order = _face_order(templates, medias)
    t_sorted, m_sorted = np.asarray(templates, np.int64)[order], np.asarray(medias)[order]
    media_starts = np.flatnonzero(np.r_[True, (t_sorted[1:] != t_sorted[:-1]) | (m_sorted[1:] != m_sorted[:-1])])
    media_counts = np.diff(np.r_[media_starts, len(order)])
    media_means = (_ordered_sums(features, order, media_starts, media_counts)
                   / media_counts.astype(np.float32)[:, None])
    media_template = t_sorted[media_starts]
    template_starts = np.flatnonzero(np.r_[True, media_template[1:] != media_template[:-1]])
    template_counts = np.diff(np.r_[template_starts, len(media_starts)])
    pooled = _ordered_sums(media_means, np.arange(len(media_means)), template_starts, template_counts)
    pooled = pooled.astype(np.float64)
    return normalize(pooled), media_template[template_starts]


def _template_rows(unique_templates, ids):
    """Rows of the template ``ids`` (int [P], all in ``unique_templates``, int [T] sorted): int64 [P]. A lookup table
    over the id range as the script's template2id where it is small (a binary search per pair costs more than the
    scoring), else a binary search."""
    low, high = int(unique_templates[0]), int(unique_templates[-1])
    if high - low >= LOOKUP_IDS:
        return np.searchsorted(unique_templates, ids)
    table = np.zeros(high - low + 1, np.int64)
    table[unique_templates - low] = np.arange(len(unique_templates))
    return table[np.asarray(ids, np.int64) - low]


def pair_scores(reference_features, probe_features, unique_templates, pairs):
    """Cosine scores of template pairs.

    Args:
      reference_features, probe_features: float64 [T, D] normalized template features (the same array for the clean
        protocol) of ``unique_templates`` (int [T] sorted); pairs: int [P, 2] template ids (reference, probe).

    Returns:
      float64 [P].
    """
    first, second = _template_rows(unique_templates, pairs[:, 0]), _template_rows(unique_templates, pairs[:, 1])
    # Pairs in template order: consecutive gathers read the same or nearby rows (cache hits); a score depends only on
    # its own two rows, so the order changes no bit.
    order = np.argsort(first * len(unique_templates) + second)
    first, second = first[order], second[order]
    scores = np.empty(len(pairs))
    for start in range(0, len(pairs), SCORE_CHUNK):
        part = slice(start, start + SCORE_CHUNK)
        products = reference_features[first[part]]
        products *= probe_features[second[part]]
        scores[order[part]] = np.sum(products, -1)
    return scores


def roc(labels, scores):
    """The ROC of ``sklearn.metrics.roc_curve(labels, scores)`` (drop_intermediate), the same float64 arrays bit for
    bit, from one unstable sort: the true / false positive counts at each distinct score do not depend on the order
    of tied scores, and the rates are the same integer ratios.

    Args:
      labels: int [P], 1 = same identity (anything else: different), both kinds present; scores: float [P] finite.

    Returns:
      ``(fpr, tpr)`` float64 [K] each, ascending.
    """
    positive = np.asarray(labels) == 1
    if positive.all() or not positive.any():
        raise ValueError("IJB pair labels must hold both same-identity (1) and different-identity (0) pairs")
    order = np.argsort(np.asarray(scores, np.float64))[::-1]
    ordered = np.asarray(scores, np.float64)[order]
    ends = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]   # last pair of each distinct score
    tps = np.cumsum(positive[order], dtype=np.int64)[ends]
    fps = 1 + ends - tps
    if len(fps) > 2:   # sklearn's drop_intermediate: keep the corners
        corners = np.flatnonzero(np.r_[True, np.diff(fps, 2) != 0, True] | np.r_[True, np.diff(tps, 2) != 0, True])
        fps, tps = fps[corners], tps[corners]
    fps, tps = np.r_[0, fps].astype(np.float64), np.r_[0, tps].astype(np.float64)
    return fps / fps[-1], tps / tps[-1]


def _nearest_largest(fpr, far):
    """Index of the ROC point whose FPR is nearest ``far``, the last one among equal distances (the largest TPR).

    ``|fpr - far|`` (as float64 computes it) falls then rises along the ascending ``fpr``, so the minimum sits at the
    insertion point of ``far`` or just before it, and the equal distances after it form a run found by bisection."""
    right = int(np.searchsorted(fpr, far))
    if right == len(fpr) or (right > 0 and far - fpr[right - 1] < fpr[right] - far):
        return right - 1
    return bisect.bisect_right(fpr, fpr[right] - far, lo=right, key=lambda value: value - far) - 1


def tar_at_far(labels, scores, fars=FARS):
    """ROC and TAR at each FAR, as eval_ijbc.py reads them off ``sklearn.metrics.roc_curve``.

    Args:
      labels: int [P] 1 = same identity (both kinds present); scores: float [P]; fars: the FARs of the table.

    Returns:
      dict: ``tar`` {far: float}, ``auc`` float, ``fpr``/``tpr`` float64 arrays of the ROC (ascending FPR).
    """
    fpr, tpr = roc(labels, scores)
    tar = {float(far): float(tpr[_nearest_largest(fpr, far)]) for far in fars}
    return dict(tar=tar, auc=float(auc(fpr, tpr)), fpr=fpr, tpr=tpr)


def probe_faces(meta):
    """Returns int64 indices of the faces of templates that are the probe (second) side of some pair."""
    return np.flatnonzero(np.isin(meta["templates"], np.unique(meta["pairs"][:, 1])))


def evaluate_features(meta, clean, masked=None, norm_score=True, detector_score=True, fars=FARS):
    """Scores an IJB set from face features.

    Args:
      meta: from ``read_ijb``; clean: float32 [N, D] features of every face (flip sums when flip-tested).
      masked: optional float32 [len(probe_faces(meta)), D] features of the masked probe faces.
      norm_score, detector_score: the protocol's weighting switches (insightface's defaults: both on).
      fars: the FARs of the table.

    Returns:
      dict protocol ("clean", "masked") -> ``tar_at_far`` dict plus ``scores`` float64 [P].
    """
    clean = weight_features(clean, meta["scores"], norm_score, detector_score)
    reference, unique = template_features(clean, meta["templates"], meta["medias"])
    probes = {"clean": reference}
    if masked is not None:
        faces = probe_faces(meta)
        mixed = clean.copy()
        mixed[faces] = weight_features(masked, meta["scores"][faces], norm_score, detector_score)
        probes["masked"] = template_features(mixed, meta["templates"], meta["medias"])[0]
    results = {}
    for protocol, probe in probes.items():
        scores = pair_scores(reference, probe, unique, meta["pairs"])
        results[protocol] = dict(tar_at_far(meta["labels"], scores, fars), scores=scores)
    return results


class IJBEvaluator:
    """IJB-B / IJB-C 1:1 verification, clean and with masked probes; ``run(embed_fn)`` yields ``(name, value)``.

    Registered as type "ijb" (``eval/registry.py``).

    Args:
      root: the set's folder (meta/, loose_crop/); "": nothing to evaluate (``run`` yields nothing).
      name: "IJBB" or "IJBC".
      masked: also score the masked-probe protocol.
      flip: the flip test; batch_size: faces per model call; seed: seed of the masks.
      norm_score, detector_score: the protocol's weighting (insightface's defaults: on).
    """

    report_kind = "ijb"   # its .results are report.write_report's ``ijb``

    def __init__(self, root, name="IJBC", masked=True, flip=True, batch_size=128, seed=0, norm_score=True,
                 detector_score=True):
        if name.upper() not in NAMES:
            raise IJBDataError(f"--ijb_name={name}: choose one of {NAMES}")
        if root and not os.path.isdir(root):
            raise IJBDataError(f"{root}: not a folder; give the IJB folder holding meta/ and loose_crop/")
        self.root, self.name = os.fspath(root), name.upper()
        self.masked, self.flip, self.batch_size, self.seed = masked, flip, batch_size, seed
        self.norm_score, self.detector_score = norm_score, detector_score
        self.results = {}

    def run(self, embed_fn):
        """Embeds and scores the set. Yields ``("NAME/PROTOCOL/tar@far=F", value)`` for each FAR in ``FARS``.

        ``self.results[NAME]`` = dict(``path``, ``pairs``, ``templates``, ``faces``, ``protocols`` = {protocol:
        ``tar_at_far`` dict with ``scores``}).
        """
        self.results = {}
        if not self.root:
            return
        embed_fn = as_embed_fn(embed_fn)
        size = embed_fn.input_size
        meta = read_ijb(self.root, self.name)
        everyone = np.arange(len(meta["images"]))
        clean = face_features(embed_fn, self.root, meta, everyone, self.batch_size, self.flip, None, size)
        masked = (face_features(embed_fn, self.root, meta, probe_faces(meta), self.batch_size, self.flip, self.seed,
                                size) if self.masked else None)
        protocols = evaluate_features(meta, clean, masked, self.norm_score, self.detector_score)
        self.results = {self.name: dict(path=self.root, pairs=len(meta["pairs"]), faces=len(everyone),
                                        templates=len(np.unique(meta["templates"])), protocols=protocols)}
        for protocol, result in protocols.items():
            for far, tar in result["tar"].items():
                yield f"{self.name}/{protocol}/tar@far={far:.0e}", tar
