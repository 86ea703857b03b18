"""SynthFaces: procedural cartoon faces aligned to the ArcFace 112x112 template, with identity in the upper face
(head shape, skin, hair, eyebrows, eyes, ears) and the lower face (nose, mouth, lips, jaw/chin, beard, moles).

An identity is a parameter dict drawn from ``np.random.default_rng([seed, IDENTITY_STREAM, identity])``; each image
of it draws pose (rotation, scale, shift around the template), expression, gaze, lighting, background, blur and noise
from ``np.random.default_rng([seed, IMAGE_STREAM, identity, image])``, so an image depends only on
(seed, identity, image), never on how the work is split. Faces are drawn supersampled, warped by the pose, area-
downsampled to 112 and then to ``image_size`` when smaller; landmarks follow the same mapping, so template-placed
masks land on nose, mouth and chin.
"""
import glob
import json
import os

import cv2
import numpy as np
from mtarcface_tf.atomic import write_text
from mtarcface_tf.progress import progress_bar

from mtarcface_tf.data import synthetic_draw as draw
from mtarcface_tf.images import encode_jpeg
from mtarcface_tf.faces.align import TEMPLATE_SIZE, rescale_points

GENERATOR_VERSION = 2           # bump when the drawing changes: cached data sets are then refused, not mixed
IDENTITY_STREAM, IMAGE_STREAM, PAIRS_STREAM = 1, 2, 3
SETTINGS_FILE, TRAIN_NAME, BIN_KEY = "synthfaces.json", "train", "synth"
MANIFEST_SOURCE = "synthfaces"  # the manifest's "source": how an export knows its model saw SynthFaces only
SUPERSAMPLE = 2                 # canvas pixels per template pixel
MARGIN = 16                     # template pixels drawn around the 112x112 square (room for the pose warp)
# Default pose ranges (uniform +-): in-plane rotation (degrees), scale (fraction), shift (template pixels), yaw
# (degrees, a turn of the head modelled as a cylinder of radius YAW_RADIUS template pixels about the vertical axis).
DEFAULT_POSE = dict(rotation=8.0, scale=0.05, shift=3.0, yaw=0.0)
YAW_RADIUS = 44.0

_SKIN = np.array([[240, 208, 184], [212, 162, 128], [168, 112, 80], [110, 72, 52]], np.float64)
_HAIR = np.array([[28, 22, 20], [62, 42, 30], [112, 78, 48], [140, 70, 40], [205, 170, 110], [155, 150, 145]],
                 np.float64)
_HAIR_P = np.array([0.3, 0.25, 0.17, 0.08, 0.12, 0.08])
_IRIS = np.array([[95, 60, 35], [50, 32, 22], [80, 120, 170], [85, 125, 80], [120, 130, 135], [130, 100, 50]],
                 np.float64)
_LIP_RED = np.array([190, 70, 80], np.float64)
_BEARDS = ("none", "stubble", "goatee", "full")
_BEARD_P = (0.6, 0.15, 0.1, 0.15)


def _colour(rng, palette, jitter, probabilities=None):
    """Returns a palette colour (RGB floats) with uniform per-channel jitter of +-``jitter``."""
    base = palette[rng.choice(len(palette), p=probabilities)]
    return np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255)


def identity_params(seed, identity, spread=1.0):
    """Returns the parameter dict of SynthFaces identity ``identity`` (int >= 0) under ``seed`` (int).

    Values are floats in template units (112x112 pixels) or RGB colours (float arrays in 0..255), plus the
    strings ``beard`` and the list ``moles`` of (x, y, radius). The same (seed, identity) always gives the same dict.
    ``spread`` in (0, 1] pulls every continuous parameter towards the middle of its range (1: the full range;
    smaller values make identities closer to each other and harder to tell apart); discrete choices are unchanged.
    """
    rng = np.random.default_rng([seed, IDENTITY_STREAM, identity])

    def u(low=None, high=None, size=None):
        if low is None:
            return rng.uniform()     # a probability draw: not narrowed
        middle = (low + high) / 2
        return middle + spread * (rng.uniform(low, high, size) - middle)

    tone = u(0, 1)
    skin = np.array([np.interp(tone, np.linspace(0, 1, len(_SKIN)), _SKIN[:, c]) for c in range(3)])
    skin = np.clip(skin + u(-10, 10, 3), 0, 255)
    hair = _colour(rng, _HAIR, 14, _HAIR_P)
    long_hair = u() < 0.35
    p = dict(
        skin=skin, hair_colour=hair,
        face_w_temple=u(32, 39), face_w_cheek=u(33, 41), face_w_jaw=u(21, 35), chin_y=u(101, 114),
        chin_power=u(1.4, 3.5), crown_y=u(-6, 6), neck_w=u(13, 19), chin_cleft=bool(u() < 0.15),
        ear_y=u(54, 62), ear_rx=u(3.5, 6.0), ear_ry=u(8, 12),
        hair_volume=u(0, 8), hair_side_len=u(65, 125) if long_hair else u(40, 60), sideburn=u(1.5, 5),
        hairline_y=u(12, 32), hairline_slope=u(-6, 6), hairline_curve=u(-5, 8),
        fringe_wave=u(0, 3), fringe_freq=u(1.5, 6), fringe_phase=u(0, 2 * np.pi),
        brow_thick=u(1.6, 4.2), brow_len=u(12, 19), brow_gap=u(7.5, 12), brow_angle=u(-12, 14),
        brow_arch=u(0, 3.5), brow_inner=u(5, 10), brow_colour=hair * u(0.45, 0.9),
        eye_w=u(5.5, 8), eye_h_up=u(2.5, 4.5), eye_h_lo=u(1.4, 3), eye_slant=u(-8, 8), eye_skew=u(-0.3, 0.3),
        eye_spread=u(-1.5, 1.5), eye_dy=u(-1, 1), iris_r=u(2.3, 3.4), iris_colour=_colour(rng, _IRIS, 15),
        lid_thick=u(0.6, 1.8), lid_dark=u(0.5, 0.95), eye_crease=u(0, 2.5) if u() < 0.6 else 0.0,
        nose_top=u(53, 61), nose_w=u(4.5, 10.5), nose_tip_r=u(2.2, 4.2), nose_dx=u(-1, 1), nose_dy=u(-2, 2),
        nostril_rx=u(1.0, 2.2), nostril_ry=u(0.6, 1.3), bridge_dark=u(0.05, 0.35),
        mouth_hw=u(11, 18), mouth_dy=u(-2, 2), lip_up=u(1.5, 4.5), lip_lo=u(2, 6), cupid=u(0.1, 0.6),
        mouth_open_max=u(3, 6), lip_colour=np.clip(skin + u(0.15, 0.75) * (_LIP_RED - skin) + u(-10, 10, 3), 0, 255),
        fold_dark=u(0.05, 0.3) if u() < 0.5 else 0.0,
        beard=_BEARDS[rng.choice(len(_BEARDS), p=_BEARD_P)], beard_top=u(66, 80), beard_alpha=u(0.5, 0.95),
        beard_colour=hair * u(0.7, 1.1), moustache=u(0.5, 0.95) if u() < 0.3 else 0.0,
    )
    if p["beard"] == "stubble":
        p["beard_alpha"] *= 0.4
    p["moles"] = [(u(28, 84), u(62, 106), u(0.7, 1.7)) for _ in range(rng.poisson(1.2))]
    return p


def _image_state(rng):
    """Per-image expression, gaze and hair: smile, mouth opening, eye openness, brow raise, gaze, hair changes."""
    return dict(smile=rng.uniform(-0.3, 1.0), open=rng.uniform(0, 1) if rng.random() < 0.3 else 0.0,
                eye_open=rng.uniform(0.55, 1.1), brow_raise=rng.uniform(-1, 1.5),
                gaze=rng.uniform(-1, 1, 2) * [1.0, 0.5], hair_tint=rng.uniform(0.88, 1.12),
                hairline_shift=rng.uniform(-1.5, 1.5), hair_volume_shift=rng.uniform(-1, 1))


def _pose_matrix(rng, pose):
    """Returns the 2x3 similarity (template -> 112 output) of a random pose around the template centre and the
    yaw in radians, drawn within the ranges of ``pose`` (keys of DEFAULT_POSE)."""
    angle = np.deg2rad(rng.uniform(-pose["rotation"], pose["rotation"]))
    scale = 1 + rng.uniform(-pose["scale"], pose["scale"])
    shift = rng.uniform(-pose["shift"], pose["shift"], 2)
    yaw = np.deg2rad(rng.uniform(-pose["yaw"], pose["yaw"]))
    a = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([draw.CENTRE_X, draw.CENTRE_X])
    return np.hstack([a, (centre + shift - a @ centre)[:, None]]), yaw


def yaw_x(x, yaw):
    """Maps template x coordinates (float array) of a frontal face to the face turned by ``yaw`` radians.

    The head is a vertical cylinder of radius YAW_RADIUS around the template centre: a point at angle phi on it
    moves to angle phi + yaw, so the side turning away is compressed and the nose and mouth move off the eye
    midpoint, as landmarks of a turned face do. Points beyond the cylinder move with its edge.
    """
    offset = np.clip((np.asarray(x, np.float64) - draw.CENTRE_X) / YAW_RADIUS, -1.0, 1.0)
    phi = np.clip(np.arcsin(offset) + yaw, -np.pi / 2, np.pi / 2)
    return draw.CENTRE_X + YAW_RADIUS * np.sin(phi) + (np.asarray(x) - draw.CENTRE_X - YAW_RADIUS * offset)


def _yaw_image(unit, yaw, margin):
    """Turns the canvas image (one pixel per template unit, ``margin`` border) by ``yaw`` radians (see yaw_x)."""
    if yaw == 0.0:
        return unit
    height, width = unit.shape[:2]
    # Inverse map: output x -> canvas x of the frontal face (the cylinder turned back by -yaw).
    source = yaw_x(np.arange(width, dtype=np.float64) - margin, -yaw) + margin
    map_x = np.broadcast_to(source.astype(np.float32)[None, :], (height, width))
    map_y = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], (height, width))
    return cv2.remap(unit, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def _canvas_warp(pose, margin):
    """Returns the 2x3 map from canvas pixels (one per template unit, ``margin`` border) to output pixels."""
    return np.hstack([pose[:, :2], (pose[:, 2] - margin * pose[:, :2].sum(axis=1))[:, None]])


def _draw_face(canvas, params, state, rng):
    """Draws all parts of the face; returns the five landmarks [5, 2] in template coordinates."""
    hair = dict(params, hair_colour=params["hair_colour"] * state["hair_tint"],
                hairline_y=params["hairline_y"] + state["hairline_shift"],
                hair_volume=max(0.0, params["hair_volume"] + state["hair_volume_shift"]))
    draw.draw_back_hair(canvas, hair)
    draw.draw_head(canvas, params)
    eyes = draw.draw_eyes(canvas, params, state)
    draw.draw_front_hair(canvas, hair)
    draw.draw_brows(canvas, params, state)
    tip = draw.draw_nose(canvas, params)
    corners = draw.mouth_corners(params, state)
    draw.draw_folds(canvas, params, tip, corners)
    draw.draw_beard(canvas, params, tip, rng)
    draw.draw_mouth(canvas, params, state)
    draw.draw_moles(canvas, params)
    return np.concatenate([eyes, tip[None], corners]).astype(np.float32)


def _photometric(image, rng):
    """Applies lighting (directional gradient, brightness, colour cast), blur and noise to float32 [S, S, 3]."""
    size = image.shape[0]
    theta = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0, 0.45)
    grid = np.linspace(-1, 1, size, dtype=np.float32)
    light = 1 + strength * (np.cos(theta) * grid[None, :] + np.sin(theta) * grid[:, None])
    gain = rng.uniform(0.7, 1.2) * rng.uniform(0.93, 1.07, 3)
    image *= cv2.merge([light * np.float32(g) for g in gain])   # per-channel fields: fast same-shape product
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2) * size / TEMPLATE_SIZE)
    noise = np.float32(rng.uniform(0, 6) * np.sqrt(3.0))        # uniform noise with std up to 6
    image += noise * (2 * rng.random(image.shape, dtype=np.float32) - 1)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def render_face(params, rng, image_size=112, pose=None):
    """Renders one image of the identity ``params`` with per-image variation drawn from ``rng``.

    Args:
      params: dict from ``identity_params``.
      rng: ``np.random.Generator`` of this image (e.g. ``default_rng([seed, IMAGE_STREAM, identity, image])``).
      image_size: output side in pixels, <= 112 (rendered at 112, then ``cv2.INTER_AREA``-downsampled).
      pose: dict of pose ranges (DEFAULT_POSE's keys: rotation and yaw in degrees, scale a fraction, shift in
        template pixels), DEFAULT_POSE when None.

    Returns:
      ``(image, landmarks)``: uint8 [S, S, 3] RGB and float32 [5, 2] (x, y) pixel coordinates of the eye centres,
      nose tip and mouth corners (the ArcFace template order).
    """
    if not 8 <= image_size <= TEMPLATE_SIZE:
        raise ValueError(f"image_size must be in 8..{TEMPLATE_SIZE}, got {image_size}")
    k = SUPERSAMPLE
    side = (TEMPLATE_SIZE + 2 * MARGIN) * k
    pose, yaw = _pose_matrix(rng, DEFAULT_POSE if pose is None else pose)
    state = _image_state(rng)
    colours = rng.uniform(0, 255, (2, 3))
    background = draw.draw_background(rng, (side, side), colours)
    canvas = draw.Canvas(background, k, MARGIN)
    landmarks = _draw_face(canvas, params, state, rng)
    unit = _yaw_image(cv2.resize(canvas.image, (side // k, side // k), interpolation=cv2.INTER_AREA), yaw, MARGIN)
    image = cv2.warpAffine(unit, _canvas_warp(pose, MARGIN), (TEMPLATE_SIZE,) * 2, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    if image_size < TEMPLATE_SIZE:
        image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    image = _photometric(image.astype(np.float32), rng)
    landmarks = np.stack([yaw_x(landmarks[:, 0], yaw), landmarks[:, 1]], axis=1)
    landmarks = landmarks @ pose[:, :2].T + pose[:, 2]
    ratio = image_size / TEMPLATE_SIZE
    return image, rescale_points(landmarks, ratio).astype(np.float32)


def image_rng(seed, identity, image):
    """Returns the ``np.random.Generator`` of image ``image`` of identity ``identity`` under ``seed``."""
    return np.random.default_rng([seed, IMAGE_STREAM, identity, image])


def render_identity(seed, identity, images, image_size=112, pose=None, spread=1.0):
    """Returns ``(faces uint8 [len(images), S, S, 3] RGB, landmarks float32 [len(images), 5, 2])``: the given
    image indices of one identity (``pose`` and ``spread`` as in ``render_face`` and ``identity_params``)."""
    params = identity_params(seed, identity, spread)
    out = np.empty((len(images), image_size, image_size, 3), np.uint8)
    landmarks = np.empty((len(images), 5, 2), np.float32)
    for i, image in enumerate(images):
        out[i], landmarks[i] = render_face(params, image_rng(seed, identity, image), image_size, pose)
    return out, landmarks


def render_faces(num_identities, images_per_identity, image_size=112, seed=0, first_identity=0, pose=None,
                 spread=1.0, with_landmarks=False):
    """Renders identities ``first_identity ..`` + ``num_identities`` - 1, ``images_per_identity`` images each.

    Returns ``(images, labels)``: uint8 [N, S, S, 3] RGB and int64 [N] in 0..num_identities-1 (relative to
    ``first_identity``), identity-major order, N = num_identities * images_per_identity; with ``with_landmarks``
    ``(images, labels, landmarks float32 [N, 5, 2])`` (pixels, template order). ``pose``: ranges as in
    ``render_face``; ``spread``: as in ``identity_params``.
    """
    rendered = [render_identity(seed, first_identity + i, range(images_per_identity), image_size, pose, spread)
                for i in range(num_identities)]
    labels = np.repeat(np.arange(num_identities, dtype=np.int64), images_per_identity)
    if rendered:
        images, landmarks = (np.concatenate(parts) for parts in zip(*rendered))
    else:
        images, landmarks = np.empty((0, image_size, image_size, 3), np.uint8), np.empty((0, 5, 2), np.float32)
    return (images, labels, landmarks) if with_landmarks else (images, labels)


class SyntheticDataError(Exception):
    """A SynthFaces output directory or argument is unusable (the message names it and the fix)."""


def _init_worker():
    cv2.setNumThreads(1)  # one process per core already


def _train_chunk(task):
    """Worker: renders identities [start, stop); returns a list of (JPEG bytes, identity label, landmarks [5, 2])."""
    seed, start, stop, per_identity, image_size, (q_lo, q_hi), pose, spread = task
    out = []
    for identity in range(start, stop):
        params = identity_params(seed, identity, spread)
        for image in range(per_identity):
            rng = image_rng(seed, identity, image)
            face, landmarks = render_face(params, rng, image_size, pose)
            out.append((encode_jpeg(face, rng.integers(q_lo, q_hi + 1)), identity, landmarks))
    return out


def _pairs_chunk(task):
    """Worker: renders the (identity, image) list of a task; returns (uint8 [K, S, S, 3] RGB, float32 [K, 5, 2])."""
    seed, image_size, items, pose, spread = task
    rendered = [render_face(identity_params(seed, i, spread), image_rng(seed, i, j), image_size, pose)
                for i, j in items]
    return np.stack([face for face, _ in rendered]), np.stack([marks for _, marks in rendered])


def eval_pair_plan(seed, first_identity, num_identities, num_pairs):
    """Returns ``(items, issame)``: 2P (identity, image) pairs and bool [P], half same, half different identity.

    Pair i is items 2i and 2i+1, using image indices 2i and 2i+1 so no image repeats. Identities are drawn from
    ``first_identity .. first_identity + num_identities - 1``.
    """
    rng = np.random.default_rng([seed, PAIRS_STREAM])
    issame = rng.permutation(np.arange(num_pairs) < num_pairs // 2)
    items = []
    for i, same in enumerate(issame):
        a, b = rng.choice(num_identities, 2, replace=False)
        items += [(first_identity + a, 2 * i), (first_identity + (a if same else b), 2 * i + 1)]
    return items, issame


def _run(function, tasks, workers, bar):
    """Yields ``function(task)`` in task order, over ``workers`` spawn processes (in-process when <= 1)."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            result = function(task)
            bar.update(len(result[0]) if isinstance(result, tuple) else len(result))
            yield result
        return
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
        for result in pool.imap(function, tasks):
            bar.update(len(result[0]) if isinstance(result, tuple) else len(result))
            yield result


def _settings(identities, images_per_identity, eval_identities, eval_pairs, image_size, seed, num_shards,
              jpeg_quality, pose, spread):
    """Validates the arguments; returns the dict that identifies a data set (stored in ``synthfaces.json``)."""
    q_lo, q_hi = (int(q) for q in jpeg_quality)
    checks = [(identities >= 1, "identities must be >= 1"),
              (images_per_identity >= 1, "images_per_identity must be >= 1"),
              (eval_pairs == 0 or eval_identities >= 2, "eval_pairs > 0 needs eval_identities >= 2"),
              (eval_pairs >= 0 and eval_identities >= 0, "eval_pairs and eval_identities must be >= 0"),
              (8 <= image_size <= TEMPLATE_SIZE, f"image_size must be in 8..{TEMPLATE_SIZE}"),
              (num_shards >= 1, "num_shards must be >= 1"),
              (1 <= q_lo <= q_hi <= 100, "jpeg_quality must be (low, high) with 1 <= low <= high <= 100"),
              (set(pose) == set(DEFAULT_POSE), f"pose must have the keys {sorted(DEFAULT_POSE)}"),
              (all(v >= 0 for v in pose.values()), "pose ranges must be >= 0"),
              (0 < spread <= 1, "spread must be in (0, 1]")]
    for ok, message in checks:
        if not ok:
            raise SyntheticDataError(message)
    return dict(version=GENERATOR_VERSION, identities=int(identities), images_per_identity=int(images_per_identity),
                eval_identities=int(eval_identities), eval_pairs=int(eval_pairs), image_size=int(image_size),
                seed=int(seed), num_shards=int(num_shards), jpeg_quality=[q_lo, q_hi],
                pose={k: float(v) for k, v in sorted(pose.items())}, spread=float(spread))


def _result(output_dir, settings, cached):
    train = os.path.join(output_dir, TRAIN_NAME)
    bins = {BIN_KEY: os.path.join(output_dir, BIN_KEY + ".bin")} if settings["eval_pairs"] else {}
    return dict(train=train, manifest=os.path.join(train, TRAIN_NAME + ".manifest.json"), bins=bins,
                images=settings["identities"] * settings["images_per_identity"],
                identities=settings["identities"], settings=settings, cached=cached)


def _check_existing(output_dir, settings):
    """Returns True when ``output_dir`` holds a complete data set made with ``settings``; raises on a different one."""
    path = os.path.join(output_dir, SETTINGS_FILE)
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        existing = json.load(f)
    if existing != settings:
        changed = ", ".join(f"{k}: {existing.get(k)} -> {v}" for k, v in settings.items() if existing.get(k) != v)
        raise SyntheticDataError(f"{output_dir}: holds SynthFaces made with other settings ({changed}); "
                                 f"use another output directory or delete this one")
    return True


def generate_dataset(output_dir, identities, images_per_identity, eval_identities, eval_pairs, image_size=112,
                     seed=0, num_shards=2, workers=2, jpeg_quality=(70, 95), progress=True, command="", pose=None,
                     spread=1.0):
    """Writes (or reuses) a SynthFaces training set and verification pairs under ``output_dir``.

    Layout: ``train/train-0000i-of-0000N.tfrecord`` + ``train/train.manifest.json`` (identities 0..identities-1,
    JPEG at a per-image quality in ``jpeg_quality``), ``synth.bin`` (insightface format, ``eval_pairs`` pairs, half
    same identity, from identities ``identities .. identities + eval_identities - 1``, disjoint from training)
    with its landmarks in ``synth.bin.landmarks.npy``, and ``synthfaces.json`` (the settings), written last.
    Every training record carries its landmarks (``records.LANDMARKS_KEY``). ``pose`` (ranges, DEFAULT_POSE when
    None) and ``spread`` are as in ``render_face`` and ``identity_params``. A directory whose ``synthfaces.json``
    matches is reused without writing anything; one made with other settings raises SyntheticDataError (delete it or
    pick another).
    Work is spread over ``workers`` spawn processes; the output does not depend on ``workers``.

    Returns dict(train=<TFRecord dir>, manifest=<path>, bins={"synth": <.bin path>} (empty without pairs),
    images, identities, settings, cached).
    """
    # Imported here, not at the top: the spawn rendering workers import this module and must stay TensorFlow-free.
    from mtarcface_tf.data import bin_pairs, shards
    pose = dict(DEFAULT_POSE if pose is None else pose)
    settings = _settings(identities, images_per_identity, eval_identities, eval_pairs, image_size, seed, num_shards,
                         jpeg_quality, pose, spread)
    if _check_existing(output_dir, settings):
        return _result(output_dir, settings, cached=True)
    result = _result(output_dir, settings, cached=False)
    train_dir = result["train"]
    os.makedirs(train_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(train_dir, "*.tfrecord")):
        os.remove(stale)  # an interrupted run with another shard count must not leave extra shards
    per_task = max(1, min(16, identities // (8 * max(workers, 1))))
    tasks = [(seed, start, min(start + per_task, identities), images_per_identity, image_size,
              tuple(settings["jpeg_quality"]), pose, spread) for start in range(0, identities, per_task)]
    total = result["images"] + 2 * eval_pairs
    with progress_bar(total=total, unit="face", desc="SynthFaces", disable=not progress, smoothing=0.1) as bar:
        with shards.ShardedRecordWriter(train_dir, TRAIN_NAME, num_shards) as writer:
            for chunk in _run(_train_chunk, tasks, workers, bar):
                for encoded, label, landmarks in chunk:
                    writer.write(encoded, label, landmarks)
            writer.close(source=MANIFEST_SOURCE, command=command, extra={"synthfaces": settings})
        if eval_pairs:
            items, issame = eval_pair_plan(seed, identities, eval_identities, eval_pairs)
            step = max(2, min(64, len(items) // (8 * max(workers, 1))))
            pair_tasks = [(seed, image_size, items[i:i + step], pose, spread) for i in range(0, len(items), step)]
            images, landmarks = (np.concatenate(parts) for parts in zip(*_run(_pairs_chunk, pair_tasks, workers, bar)))
            bin_pairs.save_bin(result["bins"][BIN_KEY], images, issame, ext=".jpg")
            bin_pairs.save_landmarks(result["bins"][BIN_KEY], landmarks, image_size)
    write_text(os.path.join(output_dir, SETTINGS_FILE), json.dumps(settings, indent=2))
    return result


def config_kwargs(synthetic_config):
    """Returns the ``generate_dataset`` keyword arguments of a ``config.data.synthetic`` ConfigDict (all but
    ``output_dir``)."""
    s = synthetic_config
    return dict(identities=s.identities, images_per_identity=s.images_per_identity,
                eval_identities=s.eval_identities, eval_pairs=s.eval_pairs, image_size=s.image_size, seed=s.seed,
                pose=dict(s.pose), spread=s.spread)
