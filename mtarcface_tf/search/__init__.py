"""Search over enrolled embeddings, the ground floor (numpy, sqlite3, faiss / usearch; no TensorFlow, no model):
index.py (make_index, Index: exact and ANN top-k behind one interface) and store.py (the SQLite gallery store)."""
from mtarcface_tf.search.index import Index, SearchIndexError, make_index

__all__ = ["Index", "SearchIndexError", "make_index"]
