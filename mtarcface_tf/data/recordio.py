"""Reads (and writes small) insightface / MXNet RecordIO files (``.rec`` + ``.idx``) without mxnet.

Layout (dmlc-core ``recordio.h``): every record is ``uint32 magic 0xCED7230A``, ``uint32 lrecord`` (upper 3 bits:
continuation flag 0 whole / 1 start / 2 middle / 3 end; lower 29 bits: length), the payload, zero padding to 4
bytes. dmlc splits a payload at every 4-byte-aligned occurrence of the magic; the reader joins the parts with the
magic put back. A payload is MXNet's ``IRHeader`` (``IfQQ``: flag, label, id, id2), then ``flag`` float32 labels
when flag > 0 (the label is then that array), then the encoded image.

insightface's training sets start with a header record 0 (flag > 0, label ``[a, b]``, no image): image keys are
``1 .. a-1`` and records ``a .. b-1`` describe identities, each with label ``[start, end)`` of its image keys.
The reader streams through buffered reads: it never loads the file, and holds only the key/offset index.
"""
import os
import struct

import numpy as np

from mtarcface_tf.atomic import atomic_open, write_text

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEAD = struct.Struct("<II")
_IR_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1
_READ_BUFFER = 1 << 20
PROPERTY_FILE = "property"  # insightface: "identities,height,width" beside train.rec


class RecordIOError(Exception):
    """A file is not RecordIO, or is corrupt or truncated (the message names the file and the offset)."""


def default_idx_path(rec_path):
    """Returns the ``.idx`` path insightface puts beside ``rec_path`` (``train.rec`` -> ``train.idx``)."""
    return os.path.splitext(rec_path)[0] + ".idx"


def unpack_payload(payload):
    """Splits a record payload into ``(flag, label, image_bytes)``.

    ``label`` is a float when flag == 0, else a float32 array of ``flag`` labels; raises ValueError when the
    payload is shorter than its header says.
    """
    if len(payload) < _IR_HEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than the {_IR_HEADER.size}-byte IRHeader")
    flag, label, _, _ = _IR_HEADER.unpack_from(payload)
    start = _IR_HEADER.size
    if flag > 0:
        end = start + 4 * flag
        if len(payload) < end:
            raise ValueError(f"payload announces {flag} labels but holds only {len(payload) - start} bytes")
        label = np.frombuffer(payload, np.float32, flag, start).copy()
        start = end
    return flag, label, payload[start:]


def pack_payload(label, image_bytes, record_id=0):
    """Returns the payload MXNet's ``recordio.pack`` makes: IRHeader (+ float32 labels if ``label`` is a sequence)."""
    if np.ndim(label) == 0:
        return _IR_HEADER.pack(0, float(label), record_id, 0) + bytes(image_bytes)
    labels = np.asarray(label, np.float32).ravel()
    return _IR_HEADER.pack(labels.size, 0.0, record_id, 0) + labels.tobytes() + bytes(image_bytes)


def _encode_record(payload):
    """Returns the bytes dmlc's ``RecordIOWriter::WriteRecord`` writes for ``payload`` (split at aligned magics)."""
    out, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == MAGIC_BYTES:
            out += [_HEAD.pack(MAGIC, ((1 if start == 0 else 2) << 29) | (i - start)), payload[start:i]]
            start = i + 4
    length = len(payload) - start
    out += [_HEAD.pack(MAGIC, ((3 if start else 0) << 29) | length), payload[start:], b"\0" * (-length % 4)]
    return b"".join(out)


def write_recordio(rec_path, idx_path, records):
    """Writes ``records`` (iterable of ``(key, payload_bytes)``) as a RecordIO file plus its ``key\\toffset`` index.

    Payloads are stored as given (make them with ``pack_payload``). ``idx_path`` may be None for no index.
    Both files are written under temporary names and renamed when complete. Returns the number of records.
    """
    count, index_lines = 0, []
    with atomic_open(rec_path, "wb") as f:
        for key, payload in records:
            index_lines.append(f"{int(key)}\t{f.tell()}\n")
            f.write(_encode_record(payload))
            count += 1
        if idx_path is not None:
            write_text(idx_path, "".join(index_lines))
    return count


def write_training_set(rec_path, labels, images):
    """Writes a training set as insightface packs MS1MV2 (``faces_emore/train.rec`` + ``train.idx``).

    Record 0 is the header (label ``[N + 1, N + 1 + K]``, no image); records 1..N are the images (label: the
    identity as a float, id: the key); records N + 1 .. N + K describe the identities (label ``[first key, end
    key)`` of each one's images). Args: ``labels`` int [N], identities 0..K-1 in non-decreasing order (each
    present); ``images``: iterable of the N encoded images in the same order. The ``.idx`` goes beside the ``.rec``
    (``default_idx_path``). Returns ``(N, K)``.
    """
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    if np.any(np.diff(labels) < 0) or np.any(counts == 0):
        raise ValueError("labels must be non-decreasing and cover every identity 0..K-1")
    first_identity_key = len(labels) + 1
    starts = 1 + np.concatenate([[0], np.cumsum(counts)])

    def records():
        yield 0, pack_payload([first_identity_key, first_identity_key + len(counts)], b"")
        for key, (label, image) in enumerate(zip(labels, images), start=1):
            yield key, pack_payload(float(label), image, record_id=key)
        for identity in range(len(counts)):
            key = first_identity_key + identity
            yield key, pack_payload([starts[identity], starts[identity + 1]], b"", record_id=key)

    write_recordio(rec_path, default_idx_path(rec_path), records())
    return len(labels), len(counts)


def write_property(folder, identities, image_size):
    """Writes insightface's ``property`` file beside a training set: ``identities,height,width`` (one line)."""
    path = os.path.join(folder, PROPERTY_FILE)
    with open(path + ".tmp", "w", encoding="ascii") as f:
        f.write(f"{int(identities)},{int(image_size)},{int(image_size)}\n")
    os.replace(path + ".tmp", path)


def _read_index(idx_path):
    """Returns ``(keys, offsets)`` int64 arrays sorted by key from a ``key\\toffset`` text index."""
    try:
        table = np.loadtxt(idx_path, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as err:
        raise RecordIOError(f"{idx_path}: not a RecordIO index ('key<TAB>offset' lines): {err}") from None
    if table.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(table[:, 0], kind="stable")
    return table[order, 0], table[order, 1]


class RecordIOReader:
    """Random access (with an ``.idx``) or sequential (without) reader of an insightface/MXNet ``.rec`` file.

    Args:
      rec_path: the ``.rec`` file.
      idx_path: its index; None uses ``<rec without extension>.idx`` or ``<rec>.idx`` when one exists, else the
        records are keyed by their position in the file (0, 1, ...).
      index: optional ``(keys, offsets)`` from another reader's ``index()`` of the same file (skips reading it).

    Iterating yields ``(label, image_bytes)`` for every image (label: float, or float32 array when the record
    carries several); header and identity records are skipped. ``len()`` is the number of images.
    Raises FileNotFoundError for a missing file, RecordIOError for a file that is not RecordIO or is corrupt.
    """

    def __init__(self, rec_path, idx_path=None, *, index=None):
        self.rec_path = rec_path
        if not os.path.isfile(rec_path):
            raise FileNotFoundError(f"{rec_path}: RecordIO file not found")
        if idx_path is not None and not os.path.isfile(idx_path):
            raise FileNotFoundError(f"{idx_path}: RecordIO index not found (leave idx_path unset to scan the .rec)")
        if idx_path is None:
            idx_path = next((p for p in (default_idx_path(rec_path), rec_path + ".idx") if os.path.isfile(p)), None)
        self.idx_path = idx_path
        self._file = open(rec_path, "rb", buffering=_READ_BUFFER)
        self._size = os.fstat(self._file.fileno()).st_size
        if self._file.read(4) != MAGIC_BYTES:
            self._file.close()
            raise RecordIOError(f"{rec_path}: not a RecordIO file (it does not start with the magic 0xCED7230A)")
        self._keys = self._offsets = None
        if index is not None:
            self._keys, self._offsets = index
        elif idx_path is not None:
            self._keys, self._offsets = _read_index(idx_path)
        self._header = None
        self._image_range = None
        try:
            self._init_header()
        except BaseException:
            self._file.close()
            raise

    def _init_header(self):
        """Recognises insightface's header: record 0 with flag >= 2, label [a, b] (1 <= a <= b) and no image."""
        if self._keys is not None and (not len(self._keys) or self._keys[0] != 0):
            return
        flag, label, image = self.read_record(0)
        if flag >= 2 and not image and 1 <= label[0] <= label[1]:
            self._header = (int(label[0]), int(label[1]))
            self._image_range = (1, self._header[0])

    # -- low-level record access -------------------------------------------------------------------------

    def _payload_at(self, offset, what):
        """Returns the (re-joined) payload of the record starting at ``offset``; ``what`` names it in errors."""
        self._file.seek(offset)
        parts = []
        while True:
            position = self._file.tell()
            head = self._file.read(8)
            if len(head) < 8:
                raise RecordIOError(f"{self.rec_path}: truncated record {what} at offset {position} "
                                    f"(file ends at {self._size}); the file is incomplete, copy it again")
            magic, lrecord = _HEAD.unpack(head)
            if magic != MAGIC:
                raise RecordIOError(f"{self.rec_path}: corrupt record {what} at offset {position} (no magic); "
                                    f"rebuild the .idx or copy the file again")
            cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
            data = self._file.read(length + (-length % 4))
            if len(data) < length:
                raise RecordIOError(f"{self.rec_path}: truncated record {what} at offset {position} "
                                    f"(needs {length} bytes, {len(data)} left); copy the file again")
            parts.append(data[:length])
            if cflag in (0, 3):
                return MAGIC_BYTES.join(parts)

    def _scan_offsets(self):
        """Returns the start offsets of all records, found by walking the record headers (no payload reads)."""
        offsets, position = [], 0
        while position < self._size:
            offsets.append(position)
            while True:
                self._file.seek(position)
                head = self._file.read(8)
                if len(head) < 8:
                    raise RecordIOError(f"{self.rec_path}: truncated record at offset {position}; copy the file again")
                magic, lrecord = _HEAD.unpack(head)
                if magic != MAGIC:
                    raise RecordIOError(f"{self.rec_path}: corrupt record at offset {position} (no magic)")
                length = lrecord & _LENGTH_MASK
                position += 8 + length + (-length % 4)
                if position > self._size:
                    raise RecordIOError(f"{self.rec_path}: truncated record at offset {offsets[-1]}; "
                                        f"copy the file again")
                if lrecord >> 29 in (0, 3):
                    break
        return np.asarray(offsets, np.int64)

    def _ensure_index(self):
        """Without an ``.idx``, keys records by their position, found once by a header-only scan."""
        if self._keys is None:
            self._offsets = self._scan_offsets()
            self._keys = np.arange(len(self._offsets), dtype=np.int64)

    def _offset_of(self, key):
        if self._keys is None and key == 0:
            return 0
        self._ensure_index()
        i = int(np.searchsorted(self._keys, key))
        if i >= len(self._keys) or self._keys[i] != key:
            raise KeyError(f"{self.rec_path}: no record with key {key}")
        return int(self._offsets[i])

    # -- public API --------------------------------------------------------------------------------------

    def index(self):
        """Returns ``(keys, offsets)`` int64 arrays of every record (scanning the file once when there is no .idx)."""
        self._ensure_index()
        return self._keys, self._offsets

    @property
    def header(self):
        """``(a, b)`` from insightface's header record 0 (images 1..a-1, identities a..b-1), or None."""
        return self._header

    def image_keys(self):
        """Returns the int64 array of the keys of all image records, in key order."""
        if self._image_range is not None:
            return np.arange(*self._image_range, dtype=np.int64)
        self._ensure_index()
        return self._keys.copy()

    @property
    def num_images(self):
        """Number of image records."""
        if self._image_range is not None:
            return self._image_range[1] - self._image_range[0]
        return len(self.image_keys())

    @property
    def num_identities(self):
        """Number of identity records (``b - a`` from the header), or None without a header."""
        return None if self._header is None else self._header[1] - self._header[0]

    def read_record(self, key):
        """Returns ``(flag, label, image_bytes)`` of the record with ``key``; KeyError when there is none."""
        payload = self._payload_at(self._offset_of(int(key)), f"key {key}")
        try:
            return unpack_payload(payload)
        except ValueError as err:
            raise RecordIOError(f"{self.rec_path}: record key {key}: {err}") from None

    def read(self, key):
        """Returns ``(label, image_bytes)`` of the record with ``key`` (label float or float32 array)."""
        _, label, image = self.read_record(key)
        return label, image

    def __len__(self):
        return self.num_images

    def __iter__(self):
        if self._keys is None:
            return self._iter_sequential()
        return (self.read(key) for key in self.image_keys())

    def _iter_sequential(self):
        """Yields ``(label, image_bytes)`` of the image records in file order (no index), reading each byte once."""
        first, stop = self._image_range or (0, None)
        position, key = 0, 0
        while position < self._size and (stop is None or key < stop):
            payload = self._payload_at(position, f"#{key}")
            position = self._file.tell()
            if key >= first:
                try:
                    _, label, image = unpack_payload(payload)
                except ValueError as err:
                    raise RecordIOError(f"{self.rec_path}: record #{key}: {err}") from None
                yield label, image
            key += 1

    def close(self):
        """Closes the file."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
