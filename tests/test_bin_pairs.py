"""Verification .bin: reading insightface pickles (Python 2 and 3 styles), the restricted unpickler, save_bin."""
import logging
import os
import pickle
import struct

import cv2
import numpy as np
import pytest

from mtarcface_tf.data.bin_pairs import BinFormatError, UnsafeFileError, load_bin, read_bin_raw, save_bin


def faces(n, size=112, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def png(image_rgb):
    return cv2.imencode(".png", image_rgb[..., ::-1])[1].tobytes()


def python2_pickle(bins, issame):
    """What Python 2's pickle.dump((bins, issame), f, protocol=2) writes: str payloads as BINSTRING."""
    out = [b"\x80\x02(("]
    for b in bins:
        out.append(b"T" + struct.pack("<I", len(b)) + b)
    out.append(b"l(")
    out += [b"\x88" if s else b"\x89" for s in issame]
    out.append(b"l\x86.")
    return b"".join(out)


def test_python3_png_bin_round_trip(tmp_path):
    images, issame = faces(4), [True, False]
    path = tmp_path / "lfw.bin"
    with open(path, "wb") as f:
        pickle.dump(([png(i) for i in images], issame), f, protocol=pickle.HIGHEST_PROTOCOL)
    loaded, same = load_bin(str(path))
    assert loaded.dtype == np.uint8 and loaded.shape == (4, 112, 112, 3)
    np.testing.assert_array_equal(loaded, images)  # PNG is lossless and the channel order is RGB
    assert same.dtype == bool and same.tolist() == issame


def test_python2_pickle_and_numpy_bins(tmp_path):
    images = faces(2, seed=1)
    py2 = tmp_path / "py2.bin"
    py2.write_bytes(python2_pickle([png(i) for i in images], [True]))
    loaded, same = load_bin(str(py2))
    np.testing.assert_array_equal(loaded, images)
    assert same.tolist() == [True]
    arrays = tmp_path / "arrays.bin"  # bins as cv2.imencode arrays and issame as numpy bools
    with open(arrays, "wb") as f:
        pickle.dump(([cv2.imencode(".png", i[..., ::-1])[1] for i in images], [np.bool_(False)]), f, protocol=2)
    loaded, same = load_bin(str(arrays))
    np.testing.assert_array_equal(loaded, images)
    assert same.tolist() == [False]


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


class _RunsShell:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.parametrize("payload_class", [_CreatesFile, _RunsShell])
def test_malicious_pickle_runs_nothing(tmp_path, payload_class):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(([payload_class(str(target))], [True])))
    with pytest.raises(UnsafeFileError, match="evil.bin"):
        load_bin(str(evil))
    assert not target.exists()


def test_resizes_other_sizes_with_warning(tmp_path, caplog):
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        pickle.dump(([png(i) for i in faces(2, size=150)], [True]), f)
    with caplog.at_level(logging.WARNING):
        loaded, _ = load_bin(str(path))
    assert loaded.shape == (2, 112, 112, 3)
    assert "big.bin" in caplog.text and "resized 2 of 2" in caplog.text
    assert load_bin(str(path), image_size=150)[0].shape == (2, 150, 150, 3)


def test_inconsistent_files_raise_value_errors_naming_file(tmp_path):
    odd = tmp_path / "odd.bin"
    odd.write_bytes(pickle.dumps(([png(i) for i in faces(3)], [True])))
    with pytest.raises(ValueError, match="odd.bin.*odd number"):
        load_bin(str(odd))
    mismatch = tmp_path / "mismatch.bin"
    mismatch.write_bytes(pickle.dumps(([png(i) for i in faces(4)], [True])))
    with pytest.raises(ValueError, match="mismatch.bin: 4 images but 1 issame"):
        load_bin(str(mismatch))
    text = tmp_path / "notes.bin"
    text.write_text("these are not pairs")
    with pytest.raises(BinFormatError, match="notes.bin: not a verification .bin"):
        load_bin(str(text))
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        load_bin(str(tmp_path / "missing.bin"))


def test_save_bin_writes_insightface_format(tmp_path):
    images, issame = faces(4, seed=3), np.array([False, True])
    path = tmp_path / "out.bin"
    save_bin(str(path), images, issame)
    assert not (tmp_path / "out.bin.tmp").exists()
    with open(path, "rb") as f:
        bins, same = pickle.load(f, encoding="bytes")  # how insightface reads it
    assert all(isinstance(b, bytes) for b in bins) and same == [False, True]
    np.testing.assert_array_equal(load_bin(str(path))[0], images)
    save_bin(str(tmp_path / "j.bin"), images, issame, ext=".jpg")
    assert read_bin_raw(str(tmp_path / "j.bin"))[0][0][:3] == b"\xff\xd8\xff"
    with pytest.raises(ValueError, match="issame"):
        save_bin(str(path), images, [True])
