"""A small IJB-B/C-format set from SynthFaces: loose crops with five landmarks and detection scores, media and
templates, template pairs with labels; what ``mtarcface_tf.eval.ijb`` reads (the folder layout of insightface's
IJB packs: ``meta/{name}_face_tid_mid.txt``, ``meta/{name}_name_5pts_score.txt``, ``meta/{name}_template_pair_
label.txt``, ``loose_crop/*.jpg``).

Each identity has ``templates_per_identity`` templates; each template ``media_per_template`` media (a photo or a
video) of 1..``max_faces_per_media`` faces. Each face is a SynthFaces image placed into a larger crop with a random
similarity (rotation, scale, shift) on a replicated border, its landmarks mapped the same way; the detection score
is drawn in ``SCORE_RANGE``. Pairs: every two templates of different identity at most ``impostors_per_template``
times per template, and every two of the same identity. Everything depends only on ``seed``.

With two or more templates per identity the 1:N lists are written too (``meta/{name}_1N_gallery_G1.csv``, ``_G2``
— ``_S1``, ``_S2`` for IJB-B — and ``_1N_probe_mixed.csv``: header ``TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID``,
one row per face, as the IJB packs): each identity's first template enrolled, the first half of the identities in
G1 and the rest in G2, every other template a probe.
"""
import os

import cv2
import numpy as np

from mtarcface_tf.atomic import atomic_directory, write_bytes
from mtarcface_tf.images import encode_jpeg
from mtarcface_tf.data import synthetic

LAYOUT_STREAM = 7               # rng stream of the set's layout and poses, apart from SynthFaces' own streams
CROP_SIZE = 160
MAX_ROTATION_DEG, SCALE_RANGE, MAX_SHIFT = 20.0, (0.75, 1.1), 12.0
FACE_FRACTION = 0.75            # side of the placed face / side of the crop, before the drawn scale
SCORE_RANGE = (0.6, 1.0)
JPEG_QUALITY = 95
GALLERY_PARTS = {"IJBC": ("G1", "G2"), "IJBB": ("S1", "S2")}
LIST_HEADER = "TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID"


def _placement(rng, face_size, crop_size, face_fraction):
    """Returns the 2x3 similarity from the aligned face to the loose crop."""
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    scale = rng.uniform(*SCALE_RANGE) * crop_size / face_size * face_fraction
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre_in, centre_out = np.full(2, face_size / 2), np.full(2, crop_size / 2) + rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    return np.hstack([rotation, (centre_out - rotation @ centre_in)[:, None]])


def loose_crop(face, landmarks, rng, crop_size=CROP_SIZE, face_fraction=FACE_FRACTION):
    """Places an aligned face into a larger crop (or a scene, with a small ``face_fraction``) with a random pose.

    Args:
      face: uint8 [S, S, 3] RGB; landmarks: float32 [5, 2] (x, y) in ``face``.
      rng: ``np.random.Generator``; crop_size: side of the crop in pixels.
      face_fraction: the face's side over the crop's before the drawn scale (``SCALE_RANGE``), in (0, 1].

    Returns:
      ``(crop uint8 [crop_size, crop_size, 3] RGB, landmarks float32 [5, 2] in the crop)``.
    """
    matrix = _placement(rng, face.shape[0], crop_size, face_fraction)
    crop = cv2.warpAffine(face, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, (landmarks @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def _layout(rng, identities, templates_per_identity, media_per_template, max_faces_per_media):
    """Returns rows (identity, template id, media id) of every face, ids from 1."""
    rows, template, media = [], 0, 0
    for identity in range(identities):
        for _ in range(templates_per_identity):
            template += 1
            for _ in range(media_per_template):
                media += 1
                rows += [(identity, template, media)] * int(rng.integers(1, max_faces_per_media + 1))
    return rows


def _pairs(rng, template_identity, impostors_per_template):
    """Returns (t1, t2, label) rows: all genuine template pairs and sampled impostor pairs."""
    ids = sorted(template_identity)
    rows = set()
    for i, first in enumerate(ids):
        for second in ids[i + 1:]:
            if template_identity[first] == template_identity[second]:
                rows.add((first, second, 1))
        others = [t for t in ids if template_identity[t] != template_identity[first]]
        for second in rng.choice(others, min(impostors_per_template, len(others)), replace=False):
            rows.add((first, int(second), 0))
    return sorted(rows)


def _write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def _write_1n_lists(prefix, name, rows, files):
    """Writes the 1:N gallery and probe lists of ``rows`` (identity, template, media) whose faces are ``files``."""
    first = {}
    for identity, template, _ in rows:
        first.setdefault(identity, template)
    half = (len(first) + 1) // 2
    lists = {f"gallery_{part}": [] for part in GALLERY_PARTS[name.upper()]}
    lists["probe_mixed"] = []
    for (identity, template, media), file_name in zip(rows, files):
        part = GALLERY_PARTS[name.upper()][identity >= half] if first[identity] == template else None
        lists[f"gallery_{part}" if part else "probe_mixed"].append(f"{template},{identity + 1},{file_name},{media}")
    for kind, lines in lists.items():
        _write_lines(f"{prefix}_1N_{kind}.csv", [LIST_HEADER] + lines)


def generate_ijb(output_dir, name="IJBC", identities=6, templates_per_identity=3, media_per_template=2,
                 max_faces_per_media=3, impostors_per_template=6, crop_size=CROP_SIZE, seed=0):
    """Writes an IJB-format set (atomically: temp folder, then rename).

    Args:
      output_dir: target folder; must not exist.
      name: "IJBB" or "IJBC" (prefix of the meta files).
      identities, templates_per_identity, media_per_template, max_faces_per_media: the set's shape (ints >= 1).
      impostors_per_template: different-identity pairs drawn per template.
      crop_size: side of the loose crops in pixels (> 112).
      seed: seed of everything.

    Returns:
      dict: ``root`` (str), ``faces``, ``templates``, ``pairs`` (ints); ``probes``: 1:N probe templates (0 when
      ``templates_per_identity`` is 1 and no 1:N lists are written).

    Raises:
      ValueError: ``output_dir`` exists or an argument is out of range (the message names it).
    """
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir):
        raise ValueError(f"{output_dir}: already exists; choose a new --output_dir")
    if min(identities, templates_per_identity, media_per_template, max_faces_per_media) < 1 or identities < 2:
        raise ValueError("need at least 2 identities and 1 template, medium and face each")
    rng = np.random.default_rng([seed, LAYOUT_STREAM])
    rows = _layout(rng, identities, templates_per_identity, media_per_template, max_faces_per_media)
    with atomic_directory(output_dir) as temp_dir:
        os.makedirs(os.path.join(temp_dir, "loose_crop"))
        os.makedirs(os.path.join(temp_dir, "meta"))
        tid_mid, points, faces_seen, files = [], [], {}, []
        for number, (identity, template, media) in enumerate(rows, start=1):
            image = faces_seen[identity] = faces_seen.get(identity, -1) + 1
            face, landmarks = synthetic.render_face(synthetic.identity_params(seed, identity),
                                                    synthetic.image_rng(seed, identity, image))
            crop, landmarks = loose_crop(face, landmarks, rng, crop_size)
            file_name = f"{number}.jpg"
            write_bytes(os.path.join(temp_dir, "loose_crop", file_name), encode_jpeg(crop, JPEG_QUALITY))
            tid_mid.append(f"{file_name} {template} {media}")
            files.append(file_name)
            score = rng.uniform(*SCORE_RANGE)
            points.append(" ".join([file_name] + [f"{v:.3f}" for v in landmarks.ravel()] + [f"{score:.4f}"]))
        pairs = _pairs(rng, {template: identity for identity, template, _ in rows}, impostors_per_template)
        prefix = os.path.join(temp_dir, "meta", name.lower())
        _write_lines(f"{prefix}_face_tid_mid.txt", tid_mid)
        _write_lines(f"{prefix}_name_5pts_score.txt", points)
        _write_lines(f"{prefix}_template_pair_label.txt", [f"{a} {b} {label}" for a, b, label in pairs])
        if templates_per_identity > 1:
            _write_1n_lists(prefix, name, rows, files)
    templates = len({r[1] for r in rows})
    return dict(root=output_dir, faces=len(rows), templates=templates, pairs=len(pairs),
                probes=templates - identities if templates_per_identity > 1 else 0)
