"""The application's gallery: enrolled people over the store (``search/store.py``), optional SVM.

A gallery is a directory (``GalleryStore``: SQLite database + search index); every ``add`` / ``remove`` / ``rename``
of a gallery opened writable is committed at once, so a crash loses at most the person being written. A gallery
made in memory (``Gallery()``) is written to a directory by ``save``. Galleries of the earlier single-file format
(``.npz``: float arrays, names in a JSON string, read with ``allow_pickle=False``) still open: ``PATH.npz`` is read
into memory and written as the directory ``PATH`` on its first write, the old file kept; once that directory
exists, ``PATH.npz`` names it. The SVM (scikit-learn ``SVC(probability=True)``, for the MTCNN + FaceNet + SVM
recipe) is not stored: it is retrained from the stored per-image embeddings when the gallery opens.
"""
import json
import os
import warnings

import numpy as np

from mtarcface_tf.export.embedder import l2_normalize
from mtarcface_tf.search.store import GalleryStore, NotEnrolledError, StoreError

LEGACY_FORMAT_VERSION = 1
LEGACY_SUFFIX = ".npz"
SVM_RANDOM_STATE = 0


class GalleryError(ValueError):
    """A gallery that is missing or corrupt, or a bad enrollment (the message names the file or person)."""


class EmptyGalleryError(GalleryError):
    """Identification against a gallery with nobody enrolled."""


def gallery_directory(path):
    """The directory a ``--gallery`` argument names: ``X.npz`` -> ``X`` (its converted form), else the path."""
    path = os.fspath(path)
    return path.removesuffix(LEGACY_SUFFIX)


class Gallery:
    """Enrolled people: ``names`` (list[str], enrolment order), ``templates`` float32 [P, D] (mean embedding per
    person, renormalized), ``counts`` int64 [P]; search through the store's index (exact, or ANN past a size)."""

    def __init__(self, embedding_size=None, use_svm=False, store=None, index_options=None):
        """Args:
          embedding_size: D, or None to take it from the first enrollment.
          use_svm: train an ``SVC(probability=True)`` on the per-image embeddings whenever people change.
          store: an open ``GalleryStore``; None makes a private in-memory one (with ``index_options``).
        """
        self._store = store if store is not None else GalleryStore.open(None, dim=embedding_size,
                                                                        index_options=index_options)
        self.use_svm = use_svm or self._store.option("use_svm") == "1"
        self.legacy_path = None     # the .npz this gallery was read from, converted on its first write
        self._svm = None
        self._refit()

    # ---- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path, writable=False, fingerprint=None, force=False, index_options=None):
        """Opens the gallery ``path`` (a directory, or an ``.npz`` of the earlier format).

        Args:
          path: str / PathLike. With ``writable`` a missing directory is created.
          fingerprint: the model's (``FaceRecognizer.fingerprint``), checked unless ``force``.
          index_options: ``search.index.make_index`` keyword arguments (kind, ann_threshold, backend, nprobe...).

        Raises:
          GalleryError: missing or unusable gallery, another writer, a model mismatch (one line naming the path).
        """
        path = os.fspath(path)
        directory = gallery_directory(path)
        if path.endswith(LEGACY_SUFFIX) and os.path.isfile(path) and not os.path.isdir(directory):
            gallery = cls._read_legacy(path, index_options)
            gallery.check_model(fingerprint, force)
            return gallery
        if not writable and not os.path.isdir(directory):
            raise GalleryError(f"{path}: no such gallery; create it with tools/recognize.py enroll.")
        try:
            store = GalleryStore.open(directory, writable=writable, fingerprint=fingerprint, force=force,
                                      index_options=index_options)
        except StoreError as error:
            raise GalleryError(str(error)) from error
        return cls(store=store)

    @classmethod
    def load(cls, path):
        """Opens ``path`` read-only (see ``open``)."""
        return cls.open(path)

    @classmethod
    def _read_legacy(cls, path, index_options):
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                counts, samples = data["counts"], data["samples"]
        except (ValueError, KeyError, OSError, json.JSONDecodeError) as error:
            raise GalleryError(f"{path}: not a gallery file ({error}); re-create it with "
                               "tools/recognize.py enroll.") from error
        if meta.get("format") != LEGACY_FORMAT_VERSION or len(meta.get("names", ())) != len(counts) \
                or int(np.sum(counts)) != len(samples):
            raise GalleryError(f"{path}: inconsistent gallery contents; re-create it with tools/recognize.py enroll.")
        gallery = cls(embedding_size=meta.get("embedding_size"), use_svm=bool(meta.get("use_svm")),
                      index_options=index_options)
        starts = np.concatenate([[0], np.cumsum(counts)])
        gallery._store.enroll_many([{"name": name, "embeddings": samples[starts[i]:starts[i + 1]]}
                                    for i, name in enumerate(meta["names"])])
        gallery.legacy_path = path
        gallery._refit()
        return gallery

    # ---- reading -------------------------------------------------------------------------------------------------
    @property
    def store(self):
        """The underlying ``GalleryStore``."""
        return self._store

    @property
    def path(self):
        """The gallery directory (str), or None for one in memory."""
        return self._store.path

    @property
    def embedding_size(self):
        """D (int), or None before the first enrollment."""
        return self._store.dim

    @property
    def names(self):
        """Enrolled names (list[str]), in enrollment order."""
        return [name for _, name, _ in self._store.people()]

    def __len__(self):
        return self._store.count()

    @property
    def counts(self):
        """int64 [P]: images enrolled per person, in ``names`` order."""
        return np.array([count for _, _, count in self._store.people()], np.int64)

    @property
    def templates(self):
        """float32 [P, D]: each person's mean embedding, L2-normalized (empty [0, D] when nobody is enrolled)."""
        return self._store.templates()[1]

    def check_model(self, fingerprint, force=False):
        """Raises GalleryError when the gallery was enrolled with another model than ``fingerprint`` (str or None:
        unknown), unless ``force``; a gallery without a fingerprint records this one on its next write."""
        try:
            self._store.check_model(fingerprint, force)
        except StoreError as error:
            raise GalleryError(str(error)) from error

    def stats(self):
        """dict of the store's figures (``GalleryStore.stats``)."""
        return self._store.stats()

    # ---- writing -------------------------------------------------------------------------------------------------
    def add(self, name, embeddings, **records):
        """Enrolls ``name`` (or adds images to an enrolled person) in one transaction.

        Args:
          name: non-empty str.
          embeddings: float [K, D] (or [D]) embeddings of the person's images; normalized here.
          **records: optional per-image lists for the store: ``sources``, ``hashes`` (SHA-256 hex: an image
            already enrolled is skipped), ``masked``, ``mask_probability``, ``detection_scores``.

        Returns:
          dict ``{"person_id", "added", "duplicates"}`` (``GalleryStore.enroll``).

        Raises:
          GalleryError: empty name, no embeddings, a size other than the gallery's D, a read-only gallery.
        """
        self._convert_legacy()
        try:
            result = self._store.enroll(name, embeddings, **records)
        except StoreError as error:
            raise GalleryError(str(error)) from error
        self._refit()
        return result

    def remove(self, *names):
        """Removes the people ``names`` in one transaction: all of them, or none when one is not enrolled
        (GalleryError naming the first such name)."""
        self._convert_legacy()
        try:
            self._store.remove(*names)
        except NotEnrolledError as error:
            enrolled = ", ".join(self.names[:20]) or "nobody"
            raise GalleryError(f"{error.name!r} is not in the gallery; enrolled: {enrolled}"
                               f"{' ...' if len(self) > 20 else ''}; nobody was removed.") from error
        except StoreError as error:
            raise GalleryError(str(error)) from error
        self._refit()

    def rename(self, old, new):
        """Renames a person; raises GalleryError for an unknown ``old`` or a taken ``new``."""
        self._convert_legacy()
        try:
            self._store.rename(old, new)
        except StoreError as error:
            raise GalleryError(str(error)) from error

    def retune(self, pq_bytes=None, min_candidates=None):
        """Sets and records the gallery's ANN code size and candidates per query (``GalleryStore.retune``); raises
        GalleryError on a value the index cannot use."""
        self._convert_legacy()
        try:
            self._store.retune(pq_bytes=pq_bytes, min_candidates=min_candidates)
        except StoreError as error:
            raise GalleryError(str(error)) from error

    def enable_svm(self):
        """Turns the SVM on; it is trained at once from the enrolled embeddings (when there are >= 2 people)."""
        if not self.use_svm:
            self.use_svm = True
            if self._store.writable:
                self._store.set_option(use_svm="1")
            self._refit()

    def _convert_legacy(self):
        """First write to a gallery read from ``X.npz``: it becomes the directory ``X`` (the .npz is kept)."""
        if self.legacy_path is None:
            return
        directory = gallery_directory(self.legacy_path)
        store = self._store
        self._store = self._copy_to(directory)
        store.close()
        print(f"converted {self.legacy_path} into the gallery folder {directory} (the old file is kept).")
        self.legacy_path = None

    def _copy_to(self, directory):
        """Writes the in-memory store into a new gallery directory; returns it opened writable."""
        try:
            self._store.copy_database(directory)
            store = GalleryStore.open(directory, writable=True, index_options=self._store.index_options)
        except StoreError as error:
            raise GalleryError(str(error)) from error
        if self.use_svm:
            store.set_option(use_svm="1")
        return store

    def save(self, path=None):
        """Makes the gallery durable: writes the index beside the database, and an in-memory gallery (or one read
        from an ``.npz``) to the directory ``path`` (``X.npz`` -> ``X``). Returns the directory (str)."""
        if self._store.path is None:
            if path is None:
                raise GalleryError("an in-memory gallery needs a path to be saved to.")
            store = self._store
            self._store = self._copy_to(gallery_directory(path))
            store.close()
            self.legacy_path = None
        self._store.flush()
        return self._store.path

    def close(self):
        """Saves the index and closes the store (releasing the writer lock)."""
        self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- search --------------------------------------------------------------------------------------------------
    def _refit(self):
        self._svm = None
        if not self.use_svm or len(self) < 2:
            return
        from sklearn.svm import SVC  # pylint: disable=import-outside-toplevel

        labels, samples = self._store.all_embeddings()
        with warnings.catch_warnings():
            # scikit-learn >= 1.9 deprecates probability=True (removal in 1.11); the recipe's SVC is kept until then.
            warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
            self._svm = SVC(kernel="linear", probability=True, random_state=SVM_RANDOM_STATE).fit(samples, labels)

    def lookup(self, queries, top_k=5):
        """Ranks enrolled people by cosine similarity to each query.

        Args:
          queries: float [Q, D] embeddings (normalized here).
          top_k: how many people to return per query (at most the gallery size).

        Returns:
          (names list[Q] of list[k] str, similarities float32 [Q, k] in [-1, 1]), best first.

        Raises:
          EmptyGalleryError: nobody is enrolled.
        """
        count = len(self)
        if not count:
            raise EmptyGalleryError("the gallery is empty; enroll people first (tools/recognize.py enroll).")
        k = min(int(top_k), count)
        scores, ids = self._store.search(l2_normalize(np.atleast_2d(queries)), k)
        names = self._store.names_of(ids)
        return [names[row * k:(row + 1) * k] for row in range(len(ids))], scores

    def search(self, queries, top_k=5):
        """As ``lookup``, but returns (indices int64 [Q, k] into ``names``, similarities float32 [Q, k])."""
        found, scores = self.lookup(queries, top_k)
        position = {name: index for index, name in enumerate(self.names)}
        return np.array([[position[name] for name in row] for row in found], np.int64), scores

    def svm_predict(self, queries):
        """SVM prediction per query: list of (name, probability), or None without an SVM (``use_svm`` off or < 2
        people). ``queries``: float [Q, D].

        The name is the SVM's decision (``predict``); the probability is Platt scaling's estimate for that name,
        which with few images per person is rough and may even be below another class's.
        """
        if self._svm is None:
            return None
        queries = l2_normalize(np.atleast_2d(queries))
        predicted = self._svm.predict(queries)
        probabilities = self._svm.predict_proba(queries)
        columns = np.searchsorted(self._svm.classes_, predicted)
        names = self._store.names_of(predicted)
        return [(names[row], float(probabilities[row, column])) for row, column in enumerate(columns)]
