"""IJB-B / IJB-C 1:N identification: insightface's ``recognition/_evaluation_/ijb/ijb_1n.py`` and NIST's open set.

The set's 1:N lists, under ROOT/meta: ``{name}_1N_gallery_G1.csv`` and ``_G2.csv`` (``_S1`` / ``_S2`` for IJB-B) and
``{name}_1N_probe_mixed.csv``, comma-separated with a header row, one row per face, ``TEMPLATE_ID,SUBJECT_ID,...``
first. Faces, media and template pooling are those of the 1:1 protocol (``eval.ijb``: flip test, norm and detector
score weighting, media means summed, L2-normalized).

Every search goes through the application's gallery store and index (``mtarcface_tf.search.store.GalleryStore``
in memory, its ``make_index`` exact or ANN): each gallery template is enrolled as one person and each probe template
is a query.

Closed set, as ijb_1n.py: gallery G1+G2 (each subject once), every ``probe_mixed`` template a mated search. Top-k
accuracy (CMC) at ranks 1, 5, 10; TPIR at FPIR f: the threshold is the k-th largest of all non-mated probe-gallery
scores with ``k = ceil(probes * f)`` (Python's float product, as the script), and a probe counts when its mated score
is strictly above it. The index returns a probe's top candidates only, so searches deepen (depth doubled for the
probes concerned) until every probe whose list was cut has its last returned score at or below the threshold: the
unseen scores then cannot change the k-th largest nor a hit.

Open set per gallery, as NIST's FRVT 1:N reports it: G1 and G2 searched separately; a probe whose subject is
enrolled is a mated search, the others are non-mated searches. FPIR(T): the fraction of non-mated searches whose top
candidate scores above T; FNIR(T): the fraction of mated searches whose mate is not among the ``CANDIDATES`` returned
with a score above T. T for a target FPIR f is the (m+1)-th largest non-mated top score with m = floor(f * non-mated)
(so the measured FPIR is at most f, ties included).

Masked protocol: every face of every probe template masked after alignment (``masked_pairs.mask_all``), the gallery
clean.
"""
import csv
import math
import os

import numpy as np

from mtarcface_tf.data.ijb_synth import GALLERY_PARTS
from mtarcface_tf.eval import ijb
from mtarcface_tf.export.embedder import as_embed_fn

RANKS = (1, 5, 10)
FPIRS = (0.01, 0.1)
CANDIDATES = 50          # NIST's candidate list length in its threshold-based FNIR
PROBES = "probe_mixed"


def list_path(root, name, part):
    """Returns ``ROOT/meta/{name.lower()}_1N_{part}.csv`` (part: ``gallery_G1``, ``probe_mixed``, ...)."""
    return os.path.join(os.fspath(root), "meta", f"{name.lower()}_1N_{part}.csv")


def read_template_subjects(path):
    """Reads a 1:N list (header row, then ``TEMPLATE_ID,SUBJECT_ID,...`` per face).

    Returns:
      ``(templates int64 [T] ascending, subjects int64 [T])``: each template once with its subject.

    Raises:
      IJBDataError: missing file, short or non-numeric row, no rows, or a template listed with two subjects.
    """
    if not os.path.isfile(path):
        raise ijb.IJBDataError(f"{path}: not found; the 1:N lists are meta/*_1N_*.csv of the IJB pack "
                               f"(tools/make_ijb_synth.py writes them); without them give --noijb_1n")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.reader(handle) if row][1:]
    try:
        pairs = np.array([(int(row[0]), int(row[1])) for row in rows], np.int64).reshape(-1, 2)
    except (ValueError, IndexError):
        bad = next(i for i, row in enumerate(rows) if len(row) < 2 or not all(f.strip().lstrip("-").isdigit()
                                                                              for f in row[:2]))
        raise ijb.IJBDataError(f"{path}: line {bad + 2} is {','.join(rows[bad])[:60]!r}; expected integer "
                               f"TEMPLATE_ID,SUBJECT_ID first") from None
    if not len(pairs):
        raise ijb.IJBDataError(f"{path}: no rows after the header")
    pairs = np.unique(pairs, axis=0)
    templates, first = np.unique(pairs[:, 0], return_index=True)
    if len(templates) != len(pairs):
        twice = pairs[np.setdiff1d(np.arange(len(pairs)), first)[0], 0]
        raise ijb.IJBDataError(f"{path}: template {twice} is listed with two subjects")
    return templates, pairs[first, 1]


def read_lists(root, name="IJBC"):
    """Reads the 1:N lists of an IJB set.

    Returns:
      dict ``galleries`` {part: (templates, subjects)} (G1, G2 or S1, S2) and ``probes`` (templates, subjects),
      int64 arrays as ``read_template_subjects``.

    Raises:
      IJBDataError: a list is unreadable, a subject has two gallery templates, a probe template is also a gallery
      template, or a probe's subject is in no gallery (ijb_1n.py's mated-search requirement).
    """
    name = name.upper()
    galleries = {part: read_template_subjects(list_path(root, name, f"gallery_{part}")) for part in GALLERY_PARTS[name]}
    probes = read_template_subjects(list_path(root, name, PROBES))
    enrolled = np.concatenate([subjects for _, subjects in galleries.values()])
    values, counts = np.unique(enrolled, return_counts=True)
    if (counts > 1).any():
        raise ijb.IJBDataError(f"{list_path(root, name, 'gallery_*')}: subject {values[counts > 1][0]} has several "
                               f"gallery templates; each subject is enrolled once")
    shared = np.intersect1d(probes[0], np.concatenate([templates for templates, _ in galleries.values()]))
    if shared.size:
        raise ijb.IJBDataError(f"{list_path(root, name, PROBES)}: template {shared[0]} is also a gallery template")
    unknown = np.setdiff1d(probes[1], enrolled)
    if unknown.size:
        raise ijb.IJBDataError(f"{list_path(root, name, PROBES)}: subject {unknown[0]} is in no gallery list; "
                               f"every probe_mixed subject must be enrolled in one")
    return dict(galleries=galleries, probes=probes)


def used_faces(meta, lists):
    """Returns ``(gallery_faces, probe_faces)``: int64 indices of the faces of the gallery and of the probe templates
    (``meta`` from ``ijb.read_faces``)."""
    gallery = np.concatenate([templates for templates, _ in lists["galleries"].values()])
    return (np.flatnonzero(np.isin(meta["templates"], gallery)),
            np.flatnonzero(np.isin(meta["templates"], lists["probes"][0])))


def pooled_templates(features, meta, faces, templates, where):
    """Template features of ``templates`` from their faces.

    Args:
      features: float32 [len(faces), D] weighted face features of ``faces`` (int face indices into ``meta``).
      templates: int [T] template ids, each with faces among ``faces``; where: the list's path for the error.

    Returns:
      float64 [T, D] L2-normalized, in the order of ``templates``.
    """
    pooled, unique = ijb.template_features(features, meta["templates"][faces], meta["medias"][faces])
    missing = np.setdiff1d(templates, unique)
    if missing.size:
        raise ijb.IJBDataError(f"{where}: templates {missing[:5].tolist()} have no faces in the face list "
                               f"(meta/*_face_tid_mid.txt)")
    return pooled[np.searchsorted(unique, templates)]


class GallerySearch:
    """A gallery of templates enrolled in the application's store (``search.store.GalleryStore``, in memory), one
    person per template; ``search`` answers in gallery rows.

    Args:
      gallery: float [G, D] unit template features; kind, options: the store's index (``make_index``'s kind and
        keyword options, e.g. ``backend="usearch"``).
    """

    def __init__(self, gallery, kind="exact", **options):
        from mtarcface_tf.search.store import GalleryStore
        gallery = np.asarray(gallery, np.float32)
        self.store = GalleryStore.open(None, writable=True, dim=gallery.shape[1],
                                       index_options=dict(options, kind=kind))
        enrolled = self.store.enroll_many([{"name": str(row), "embeddings": gallery[row:row + 1]}
                                           for row in range(len(gallery))])
        person_ids = np.array([result["person_id"] for result in enrolled], np.int64)
        self._row_of = np.full(person_ids.max() + 2, -1, np.int64)   # the last entry maps the padding id -1
        self._row_of[person_ids] = np.arange(len(gallery))

    def search(self, queries, k):
        """Top-k gallery rows per query: (scores float32 [q, k] cosine descending, rows int64 [q, k]; -inf / -1
        padding)."""
        scores, person_ids = self.store.search(queries, k)
        return scores, self._row_of[person_ids]


def _search(index, queries, depth):
    scores, ids = index.search(np.ascontiguousarray(queries, np.float32), depth)
    return np.asarray(scores, np.float64), np.asarray(ids, np.int64)


def _kth_largest(values, k):
    return -np.partition(-values, k - 1)[k - 1] if 0 < k <= len(values) else -np.inf


def closed_set(index, gallery_size, probes, mates, ranks=RANKS, fpirs=FPIRS, depth=1):
    """ijb_1n.py's ``evaluation``: top-k accuracy and TPIR at FPIR (k-th largest negative score) through ``index``.

    Args:
      index: the gallery (``GallerySearch``); gallery_size: G >= 2 templates in it.
      probes: float [Q, D] unit probe template features; mates: int [Q] gallery row of each probe's subject.
      ranks: CMC ranks reported; fpirs: FPIRs of the TPIR; depth: first search depth (at least the largest rank).

    Returns:
      dict ``top`` {rank: accuracy}, ``cmc`` float64 [R] (accuracy at ranks 1..R), ``tpir`` {fpir: rate},
      ``threshold`` {fpir: score}, ``probes`` Q, ``searches`` (index calls).
    """
    count = len(probes)
    need = max(math.ceil(count * fpir) for fpir in fpirs)
    depth = min(max(depth, max(ranks)), gallery_size)
    scores, ids = _search(index, probes, depth)
    hits = ids == np.asarray(mates)[:, None]
    cmc = np.cumsum(np.sum(hits, 0)) / count
    mated = np.where(hits, scores, -np.inf).max(1)
    negatives = [row[~hit & (found >= 0)] for row, hit, found in zip(scores, hits, ids)]
    searches, todo = 1, np.arange(count)
    while True:
        threshold = _kth_largest(np.concatenate(negatives), need)
        cut = (ids[:, -1] >= 0) & (scores[:, -1] > threshold) & (depth < gallery_size)
        todo = todo[cut]
        if not todo.size:
            break
        depth = min(2 * depth, gallery_size)
        scores, ids = _search(index, probes[todo], depth)
        hits = ids == np.asarray(mates)[todo, None]
        mated[todo] = np.where(hits, scores, -np.inf).max(1)
        for row, score, hit, found in zip(todo, scores, hits, ids):
            negatives[row] = score[~hit & (found >= 0)]
        searches += 1
    negatives = np.concatenate(negatives)
    thresholds = {fpir: float(_kth_largest(negatives, math.ceil(count * fpir))) for fpir in fpirs}
    return dict(top={rank: float(cmc[min(rank, len(cmc)) - 1]) for rank in ranks}, cmc=cmc,
                tpir={fpir: float(np.sum(mated > th) / count) for fpir, th in thresholds.items()},
                threshold=thresholds, probes=count, searches=searches)


def open_set(index, gallery_size, probes, mates, fpirs=FPIRS, candidates=CANDIDATES):
    """NIST's threshold-based 1:N accuracy of one gallery through ``index``.

    Args:
      index, gallery_size: the gallery (``GallerySearch``); probes: float [Q, D] unit probe template features.
      mates: int [Q] gallery row of the probe's subject, -1 for a non-mated search (both kinds present).
      fpirs: target FPIRs; candidates: length L of the candidate list (a mate must be among the top L).

    Returns:
      dict ``fnir`` {fpir: rate}, ``fpir`` {fpir: measured rate}, ``threshold`` {fpir: score}, ``mated`` and
      ``non_mated`` (search counts), ``rank1`` (mated searches with the mate first).
    """
    mates = np.asarray(mates, np.int64)
    mated = mates >= 0
    if mated.all() or not mated.any():
        raise ValueError("an open-set gallery needs both mated and non-mated probe searches")
    scores, ids = _search(index, probes, min(candidates, gallery_size))
    mate_scores = np.where(ids == mates[:, None], scores, -np.inf).max(1)[mated]
    impostor_tops = np.where(ids[~mated, 0] >= 0, scores[~mated, 0], -np.inf)
    out = dict(fnir={}, fpir={}, threshold={}, mated=int(mated.sum()), non_mated=int((~mated).sum()),
               rank1=float(np.mean(ids[mated, 0] == mates[mated])))
    for fpir in fpirs:
        allowed = math.floor(round(fpir * len(impostor_tops), 9))
        threshold = _kth_largest(impostor_tops, allowed + 1)
        out["threshold"][fpir] = float(threshold)
        out["fpir"][fpir] = float(np.mean(impostor_tops > threshold))
        out["fnir"][fpir] = float(np.mean(~(mate_scores > threshold)))
    return out


def identify(gallery_sets, probes, probe_subjects, index_kind="exact", index_options=None, ranks=RANKS, fpirs=FPIRS,
             candidates=CANDIDATES):
    """Both 1:N protocols from template features.

    Args:
      gallery_sets: {part: (features float [G_p, D] unit rows, subjects int [G_p])}, G1 then G2 (or S1, S2).
      probes: float [Q, D] unit probe template features; probe_subjects: int [Q], each in one gallery part.
      index_kind, index_options: ``make_index``'s kind ("exact", "ann", "auto") and options.
      ranks, fpirs: the reported ranks and FPIRs; candidates: the open set's candidate list length L.

    Returns:
      dict ``closed``: ``closed_set`` over the union of the parts; ``open`` {part: ``open_set``}.
    """
    options = index_options or {}
    features = np.concatenate([f for f, _ in gallery_sets.values()])
    subjects = np.concatenate([s for _, s in gallery_sets.values()])
    row_of = {int(subject): row for row, subject in enumerate(subjects)}
    mates = np.array([row_of[int(subject)] for subject in probe_subjects], np.int64)
    closed = closed_set(GallerySearch(features, index_kind, **options), len(features), probes, mates, ranks, fpirs)
    opened = {}
    for part, (part_features, part_subjects) in gallery_sets.items():
        part_row = {int(subject): row for row, subject in enumerate(part_subjects)}
        part_mates = np.array([part_row.get(int(subject), -1) for subject in probe_subjects], np.int64)
        opened[part] = open_set(GallerySearch(part_features, index_kind, **options), len(part_features), probes,
                                part_mates, fpirs, candidates)
    return dict(closed=closed, open=opened)


def evaluate_features(meta, lists, gallery_features, probe_features, masked=None, norm_score=True,
                      detector_score=True, index_kind="exact", index_options=None, where=""):
    """Scores 1:N from face features.

    Args:
      meta: ``ijb.read_faces``; lists: ``read_lists``.
      gallery_features, probe_features: float32 [len(faces), D] raw features (flip sums) of ``used_faces``'s two
        face sets; masked: optional float32 features of the probe faces masked.
      norm_score, detector_score: the protocol's weighting; index_kind, index_options: the index searched.
      where: the lists' folder, named in errors.

    Returns:
      dict protocol ("clean", "masked") -> ``identify``'s dict.
    """
    gallery_faces, probe_faces = used_faces(meta, lists)
    gallery_weighted = ijb.weight_features(gallery_features, meta["scores"][gallery_faces], norm_score,
                                           detector_score)
    galleries = {part: (pooled_templates(gallery_weighted, meta, gallery_faces, templates, where), subjects)
                 for part, (templates, subjects) in lists["galleries"].items()}
    probe_sets = {"clean": probe_features} if masked is None else {"clean": probe_features, "masked": masked}
    results = {}
    for protocol, features in probe_sets.items():
        weighted = ijb.weight_features(features, meta["scores"][probe_faces], norm_score, detector_score)
        probes = pooled_templates(weighted, meta, probe_faces, lists["probes"][0], where)
        results[protocol] = identify(galleries, probes, lists["probes"][1], index_kind, index_options)
    return results


def metric_names(name, protocol, result):
    """Yields ``(metric name, value)`` of one protocol's ``identify`` dict: ``NAME/1N/PROTOCOL/top1``,
    ``.../tpir@fpir=1e-02``, ``.../G1/fnir@fpir=1e-02``."""
    for rank, value in result["closed"]["top"].items():
        yield f"{name}/1N/{protocol}/top{rank}", value
    for fpir, value in result["closed"]["tpir"].items():
        yield f"{name}/1N/{protocol}/tpir@fpir={fpir:.0e}", value
    for part, scores in result["open"].items():
        for fpir, value in scores["fnir"].items():
            yield f"{name}/1N/{protocol}/{part}/fnir@fpir={fpir:.0e}", value


class IJB1NEvaluator:
    """IJB-B / IJB-C 1:N identification, clean and with masked probes; ``run(embed_fn)`` yields ``(name, value)``.

    Args:
      root: the set's folder (meta/ with the 1:N lists, loose_crop/); name: "IJBB" or "IJBC".
      masked: also score masked probes; flip, batch_size, seed, norm_score, detector_score: as ``ijb.IJBEvaluator``.
      index: the search index kind ("exact", "ann", "auto"); index_options: passed to ``make_index``.
    """

    report_kind = "ijb_1n"   # its .results are report.write_report's ``ijb_1n``; type "ijb_1n" in eval/registry.py

    def __init__(self, root, name="IJBC", masked=True, flip=True, batch_size=128, seed=0, norm_score=True,
                 detector_score=True, index="exact", index_options=None):
        if name.upper() not in ijb.NAMES:
            raise ijb.IJBDataError(f"--ijb_name={name}: choose one of {ijb.NAMES}")
        self.root, self.name = os.fspath(root), name.upper()
        self.masked, self.flip, self.batch_size, self.seed = masked, flip, batch_size, seed
        self.norm_score, self.detector_score = norm_score, detector_score
        self.index, self.index_options = index, dict(index_options or {})
        self.results = {}

    def run(self, embed_fn):
        """Embeds the gallery and probe faces and scores both protocols; yields ``metric_names``' metrics.

        ``self.results[NAME]`` = dict(``path``, ``faces``, ``gallery`` {part: templates}, ``probes``, ``index``,
        ``protocols`` = {protocol: ``identify`` dict}). A ``root`` of "" yields nothing (a config's default).
        """
        self.results = {}
        if not self.root:
            return
        embed_fn = as_embed_fn(embed_fn)
        size = embed_fn.input_size
        meta = ijb.read_faces(self.root, self.name)
        lists = read_lists(self.root, self.name)
        gallery_faces, probe_faces = used_faces(meta, lists)

        def features(faces, mask_seed=None):
            return ijb.face_features(embed_fn, self.root, meta, faces, self.batch_size, self.flip, mask_seed, size)

        protocols = evaluate_features(meta, lists, features(gallery_faces), features(probe_faces),
                                      features(probe_faces, self.seed) if self.masked else None, self.norm_score,
                                      self.detector_score, self.index, self.index_options,
                                      os.path.join(self.root, "meta"))
        self.results = {self.name: dict(
            path=self.root, faces=len(gallery_faces) + len(probe_faces), probes=len(lists["probes"][0]),
            gallery={part: len(templates) for part, (templates, _) in lists["galleries"].items()}, index=self.index,
            protocols=protocols)}
        for protocol, result in protocols.items():
            yield from metric_names(self.name, protocol, result)
