"""RecordIO reader/writer: files crafted byte by byte (header, identities, split records, no .idx, corrupt files)."""
import struct

import numpy as np
import pytest

from mtarcface_tf.data import recordio
from mtarcface_tf.data.recordio import MAGIC, MAGIC_BYTES, RecordIOError, RecordIOReader


def raw_record(payload, cflag=0):
    """One dmlc record built by hand: magic, lrecord (cflag << 29 | length), payload, zero padding."""
    return struct.pack("<II", MAGIC, (cflag << 29) | len(payload)) + payload + b"\0" * (-len(payload) % 4)


def ir(flag, label, image=b"", labels=()):
    """An MXNet IRHeader payload built by hand."""
    return struct.pack("<IfQQ", flag, label, 0, 0) + np.asarray(labels, np.float32).tobytes() + image


# Image 2's bytes contain the magic at a 4-aligned payload offset (24-byte header + 4), so dmlc splits it.
IMAGES = [b"img-one!", b"abcd" + MAGIC_BYTES + b"tail", b"x" * 13]
IMAGE_LABELS = [0.0, 0.0, 1.0]


@pytest.fixture
def insightface_rec(tmp_path):
    """A .rec/.idx pair in insightface layout: header [4, 6], images 1..3, identities 4..5."""
    payloads = [ir(2, 0.0, labels=[4, 6])] + [ir(0, lab, img) for lab, img in zip(IMAGE_LABELS, IMAGES)]
    payloads += [ir(2, 0.0, labels=[1, 3]), ir(2, 0.0, labels=[3, 4])]
    chunks = []
    for payload in payloads:
        if MAGIC_BYTES in payload:
            cut = payload.index(MAGIC_BYTES)
            assert cut % 4 == 0
            chunks.append(raw_record(payload[:cut], 1) + raw_record(payload[cut + 4:], 3))
        else:
            chunks.append(raw_record(payload))
    offsets = np.cumsum([0] + [len(c) for c in chunks])[:-1]
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    rec.write_bytes(b"".join(chunks))
    idx.write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets)))
    return rec, idx


def _identity_ranges(reader):
    """The [start, end) image-key range of each identity record named by the header record 0."""
    return np.array([np.asarray(reader.read_record(key)[1], np.float64)[:2] for key in range(*reader.header)],
                    np.int64)


def test_reads_insightface_layout_with_index(insightface_rec):
    rec, _ = insightface_rec
    with RecordIOReader(str(rec)) as reader:
        assert reader.header == (4, 6)
        assert len(reader) == reader.num_images == 3
        assert reader.num_identities == 2
        assert [(float(lab), img) for lab, img in reader] == list(zip(IMAGE_LABELS, IMAGES))
        np.testing.assert_array_equal(_identity_ranges(reader), [[1, 3], [3, 4]])
        assert reader.read(2) == (0.0, IMAGES[1])
        label, _ = reader.read(4)
        np.testing.assert_array_equal(label, [1.0, 3.0])


def test_sequential_scan_without_index(insightface_rec):
    rec, idx = insightface_rec
    idx.unlink()
    with RecordIOReader(str(rec)) as reader:
        assert reader.idx_path is None
        assert [img for _, img in reader] == IMAGES
        assert len(reader) == 3
        assert reader.read(3) == (1.0, IMAGES[2])


def test_writer_splits_magic_like_dmlc(tmp_path, insightface_rec):
    rec, idx = insightface_rec
    payloads = [ir(2, 0.0, labels=[4, 6])] + [ir(0, lab, img) for lab, img in zip(IMAGE_LABELS, IMAGES)]
    payloads += [ir(2, 0.0, labels=[1, 3]), ir(2, 0.0, labels=[3, 4])]
    ours = tmp_path / "ours.rec"
    assert recordio.write_recordio(str(ours), str(tmp_path / "ours.idx"), enumerate(payloads)) == 6
    assert ours.read_bytes() == rec.read_bytes()
    assert (tmp_path / "ours.idx").read_text() == idx.read_text()
    assert recordio.pack_payload(IMAGE_LABELS[1], IMAGES[1]) == payloads[2]


def test_training_set_writer_packs_as_insightface(tmp_path, insightface_rec):
    """write_training_set gives, record for record, the hand-built insightface layout (ids aside: it sets id = key,
    as insightface's face2rec does), split records included; property says identities,height,width."""
    rec, _ = insightface_rec
    ours = tmp_path / "ours" / "train.rec"
    ours.parent.mkdir()
    assert recordio.write_training_set(str(ours), [int(label) for label in IMAGE_LABELS], IMAGES) == (3, 2)
    assert (tmp_path / "ours" / "train.idx").is_file()
    with RecordIOReader(str(rec)) as expected, RecordIOReader(str(ours)) as written:
        assert written.header == expected.header
        for key in range(6):
            (flag, label, image), want = written.read_record(key), expected.read_record(key)
            assert (flag, image) == (want[0], want[2]) and np.array_equal(label, want[1])
            assert struct.unpack_from("<IfQQ", written._payload_at(written._offset_of(key), key))[2] == key
    recordio.write_property(str(ours.parent), 85742, 112)
    assert (ours.parent / "property").read_text() == "85742,112,112\n"
    with pytest.raises(ValueError, match="non-decreasing"):
        recordio.write_training_set(str(tmp_path / "bad.rec"), [1, 0], IMAGES[:2])


def test_split_across_several_magics_round_trips(tmp_path):
    image = MAGIC_BYTES * 3 + b"end" + MAGIC_BYTES
    recordio.write_recordio(str(tmp_path / "a.rec"), None, [(0, recordio.pack_payload(7.0, image))])
    with RecordIOReader(str(tmp_path / "a.rec")) as reader:
        assert reader.header is None
        assert list(reader) == [(7.0, image)]


def test_multi_label_record_without_header(tmp_path):
    payload = recordio.pack_payload([5.0, 2.0, 9.0], b"jpeg")
    recordio.write_recordio(str(tmp_path / "m.rec"), str(tmp_path / "m.idx"), [(0, payload)])
    with RecordIOReader(str(tmp_path / "m.rec")) as reader:
        (label, image), = list(reader)
        np.testing.assert_array_equal(label, [5, 2, 9])
        assert image == b"jpeg"
        assert reader.header is None and reader.num_identities is None


def test_truncated_file_names_file_and_offset(insightface_rec):
    rec, idx = insightface_rec
    data = rec.read_bytes()
    rec.write_bytes(data[:-10])
    idx.unlink()
    with RecordIOReader(str(rec)) as reader:
        with pytest.raises(RecordIOError, match=r"train\.rec.*truncated.*offset \d+"):
            reader.read(5)


def test_not_a_recordio_file(tmp_path):
    bad = tmp_path / "photo.rec"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely a jpeg")
    with pytest.raises(RecordIOError, match=r"photo\.rec: not a RecordIO file"):
        RecordIOReader(str(bad))


def test_missing_files(insightface_rec, tmp_path):
    rec, _ = insightface_rec
    with pytest.raises(FileNotFoundError, match="nothere.idx"):
        RecordIOReader(str(rec), str(tmp_path / "nothere.idx"))
    with pytest.raises(FileNotFoundError, match="nothere.rec"):
        RecordIOReader(str(tmp_path / "nothere.rec"))
