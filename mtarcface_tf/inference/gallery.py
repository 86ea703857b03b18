"""A gallery of enrolled identities: per-image embeddings, one mean template per person, optional SVM.

Stored as ``.npz`` (float32/int arrays only, names and options in a JSON string) and loaded with
``allow_pickle=False``, so opening a gallery file never runs code. Writes go to a temporary file that is renamed
when complete. The SVM (scikit-learn ``SVC(probability=True)``, for the MTCNN + FaceNet + SVM recipe) is not
stored: it is retrained from the stored per-image embeddings when the gallery loads.
"""
import json
import os
import tempfile
import warnings

import numpy as np

from mtarcface_tf.export.embedder import l2_normalize

FORMAT_VERSION = 1
SVM_RANDOM_STATE = 0


class GalleryError(ValueError):
    """A gallery file that is missing or corrupt, or a bad enrollment (the message names the file or person)."""


class EmptyGalleryError(GalleryError):
    """Identification against a gallery with nobody enrolled."""


class Gallery:
    """Enrolled people: ``names`` (list[str]), ``templates`` float32 [P, D] (mean embedding per person,
    renormalized), ``counts`` int64 [P] (images enrolled per person); per-image embeddings are kept for the SVM.
    """

    def __init__(self, embedding_size=None, use_svm=False):
        """Args:
          embedding_size: D, or None to take it from the first enrollment.
          use_svm: train an ``SVC(probability=True)`` on the per-image embeddings whenever people change.
        """
        self.embedding_size = embedding_size
        self.use_svm = use_svm
        self._samples = {}
        self._svm = None

    @property
    def names(self):
        """Enrolled names (list[str]), in enrollment order."""
        return list(self._samples)

    def __len__(self):
        return len(self._samples)

    @property
    def counts(self):
        """int64 [P]: images enrolled per person, in ``names`` order."""
        return np.array([len(self._samples[name]) for name in self._samples], np.int64)

    @property
    def templates(self):
        """float32 [P, D]: each person's mean embedding, L2-normalized (empty [0, D] when nobody is enrolled)."""
        if not self._samples:
            return np.zeros((0, self.embedding_size or 0), np.float32)
        return l2_normalize(np.stack([samples.mean(axis=0) for samples in self._samples.values()]))

    def add(self, name, embeddings):
        """Enrolls ``name`` (or adds images to an enrolled person).

        Args:
          name: non-empty str.
          embeddings: float [K, D] (or [D]) embeddings of the person's images; normalized here.

        Raises:
          GalleryError: empty name, no embeddings, or a size other than the gallery's D.
        """
        if not isinstance(name, str) or not name.strip():
            raise GalleryError(f"person name must be a non-empty string, got {name!r}.")
        embeddings = np.atleast_2d(np.asarray(embeddings, np.float32))
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise GalleryError(f"{name}: no embeddings to enroll (shape {embeddings.shape}).")
        if self.embedding_size is None:
            self.embedding_size = embeddings.shape[1]
        if embeddings.shape[1] != self.embedding_size:
            raise GalleryError(f"{name}: embeddings have size {embeddings.shape[1]}, the gallery holds "
                               f"{self.embedding_size}; enroll with the same model as the gallery.")
        previous = self._samples.get(name, np.zeros((0, self.embedding_size), np.float32))
        self._samples[name] = np.concatenate([previous, l2_normalize(embeddings)])
        self._refit()

    def remove(self, name):
        """Removes ``name``; raises GalleryError when nobody of that name is enrolled."""
        if name not in self._samples:
            raise GalleryError(f"{name!r} is not in the gallery; enrolled: {', '.join(self.names) or 'nobody'}.")
        del self._samples[name]
        self._refit()

    def enable_svm(self):
        """Turns the SVM on; it is trained at once from the enrolled embeddings (when there are >= 2 people)."""
        if not self.use_svm:
            self.use_svm = True
            self._refit()

    def _refit(self):
        self._svm = None
        if not self.use_svm or len(self._samples) < 2:
            return
        from sklearn.svm import SVC  # pylint: disable=import-outside-toplevel

        samples = np.concatenate(list(self._samples.values()))
        labels = np.concatenate([np.full(len(value), index) for index, value in enumerate(self._samples.values())])
        with warnings.catch_warnings():
            # scikit-learn >= 1.9 deprecates probability=True (removal in 1.11); the recipe's SVC is kept until then.
            warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
            self._svm = SVC(kernel="linear", probability=True, random_state=SVM_RANDOM_STATE).fit(samples, labels)

    def search(self, queries, top_k=5):
        """Ranks enrolled people by cosine similarity to each query.

        Args:
          queries: float [Q, D] embeddings (normalized here).
          top_k: how many people to return per query (at most the gallery size).

        Returns:
          (indices int64 [Q, k] into ``names``, similarities float32 [Q, k] in [-1, 1]), best first.

        Raises:
          EmptyGalleryError: nobody is enrolled.
        """
        if not self._samples:
            raise EmptyGalleryError("the gallery is empty; enroll people first (tools/recognize.py enroll).")
        similarities = l2_normalize(np.atleast_2d(queries)) @ self.templates.T
        k = min(int(top_k), len(self._samples))
        order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
        return order.astype(np.int64), np.take_along_axis(similarities, order, axis=1)

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
        names = self.names
        return [(names[label], float(probabilities[row, column]))
                for row, (label, column) in enumerate(zip(predicted, columns))]

    def save(self, path):
        """Writes the gallery to ``path`` (.npz) atomically (temp file + rename). Returns ``path`` (str)."""
        path = os.fspath(path)
        meta = {"format": FORMAT_VERSION, "names": self.names, "use_svm": self.use_svm,
                "embedding_size": self.embedding_size}
        size = self.embedding_size or 0
        samples = (np.concatenate(list(self._samples.values())) if self._samples
                   else np.zeros((0, size), np.float32))
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        handle, temp_path = tempfile.mkstemp(prefix=".gallery-", suffix=".npz.tmp", dir=folder)
        try:
            with os.fdopen(handle, "wb") as temp_file:
                np.savez(temp_file, meta=np.array(json.dumps(meta)), templates=self.templates,
                         counts=self.counts, samples=samples.astype(np.float32))
            os.replace(temp_path, path)
        except BaseException:
            os.unlink(temp_path)
            raise
        return path

    @classmethod
    def load(cls, path):
        """Reads a gallery written by ``save`` (no pickle). Raises GalleryError naming ``path`` if missing/corrupt."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise GalleryError(f"{path}: no such gallery file; create it with tools/recognize.py enroll.")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                counts, samples = data["counts"], data["samples"]
        except (ValueError, KeyError, OSError, json.JSONDecodeError) as error:
            raise GalleryError(f"{path}: not a gallery file ({error}); re-create it with "
                               "tools/recognize.py enroll.") from error
        if meta.get("format") != FORMAT_VERSION or len(meta.get("names", ())) != len(counts) \
                or int(np.sum(counts)) != len(samples):
            raise GalleryError(f"{path}: inconsistent gallery contents; re-create it with tools/recognize.py enroll.")
        gallery = cls(embedding_size=meta.get("embedding_size"), use_svm=bool(meta.get("use_svm")))
        starts = np.concatenate([[0], np.cumsum(counts)])
        for index, name in enumerate(meta["names"]):
            gallery._samples[name] = samples[starts[index]:starts[index + 1]].astype(np.float32)
        gallery._refit()
        return gallery
