"""MaskTheFace-style face masks painted on aligned faces, in pure TensorFlow ops, vectorised over the batch.

MaskTheFace (Anwar & Raychowdhury, 2020) fits a mask picture to dlib landmarks, one image at a time (a few
images/s). Here every mask is an implicit shape evaluated on the pixel grid of the whole batch at once:

* the mask is placed from that image's five landmarks, as MaskTheFace fits its masks: a least-squares similarity
  maps the landmarks onto the ArcFace template (the face's in-plane rotation, scale and position); in that
  canonical frame six anchor points come from the mapped landmarks (nose bridge, left/right cheek from the eyes,
  a chin point below the mouth), so the landmarks' asymmetry (a turned head: nose and mouth off the eye midpoint)
  makes one side of the mask narrower; the mask is painted there and warped back onto the image (two batched
  projective warps). Images without landmarks use the template itself (no warp). Anchors are jittered per
  image and a random left/right "pose" widens one side;
* each mask type (surgical, N95, KN95, cloth, gas-like) is a 12-vertex convex outline in a face frame spanned
  by those anchors (u: -1 left cheek .. +1 right cheek, v: 0 nose bridge .. 1 chin), plus per-type details
  (pleats, a centre seam or fold, a valve, filter cartridges) gathered from small parameter tables, so no
  branch depends on the type;
* coverage is a soft (anti-aliased) signed-distance test against the outline's half-planes: one batched
  matmul of the pixel grid with the edge lines;
* half the masks are a plain colour (white, light blue, green, black or random), half a procedural texture
  (stripes, checks, dots, floral interference) blended 50/50 with the colour, as MaskTheFace does;
* the mask colour is shaded by the blurred luminance of the face under it, relative to its mean;
* the mask fades in below the line of the eyes plus a margin (in the canonical frame), so the eyes are never
  touched; without landmarks the rows above it are not even computed.

Only the images drawn to be masked are processed (gathered, painted, scattered back), so the cost scales
with the mask probability.
"""
import math

import numpy as np
import tensorflow as tf

from mtarcface_tf.faces import align
from mtarcface_tf.faces.align import ARCFACE_TEMPLATE

TEMPLATE_SIZE = float(align.TEMPLATE_SIZE)   # float: sizes below are divided by it inside TF graphs
MASK_TYPES = ("surgical", "n95", "kn95", "cloth", "gas")
COLOURS = ("white", "light_blue", "green", "black", "random")
TEXTURES = ("stripes", "checks", "dots", "floral")

# Anchor geometry, as fractions of template distances.
BRIDGE_FRACTION = 0.3      # nose bridge: this far from the eye midpoint towards the nose tip
CHEEK_OFFSET = 0.5         # cheeks: this many eye distances outside each eye, halfway between nose and mouth
CHIN_DROP = 0.75           # chin: this many nose-to-mouth distances below the mouth
EYE_MARGIN = 0.15          # masks start at least this many eye distances below the lower eye
# Landmarks mapped into the canonical frame stay within this many template pixels of the template's: the fit
# absorbs rotation, scale and shift, so only the yaw (and detector error) remain; a wild detection cannot drag
# the mask off the face, and the painted window stays a fixed size.
LANDMARK_REACH_PX = 10.0
# Landmark-fitted masks are painted and warped at 1/LANDMARK_DOWNSCALE of the image side and upsampled (bilinear):
# the projective warp is the costly op, and the mask's texture periods (>= 5 px) survive the halving.
LANDMARK_DOWNSCALE = 2
MIN_DOWNSCALED_SIZE = 32   # smaller images are painted at full size

# Per-image randomisation, in template pixels (scaled with the image) or fractions.
JITTER_PX = 1.5
POSE_RANGE = 0.12          # one side of the mask up to 12% wider, the other narrower
TEXTURE_PERIOD_PX = (5.0, 11.0)
TEXTURE_SHARPNESS = 6.0
TEXTURE_WEIGHT = 0.5       # MaskTheFace's default pattern weight
SHADE_STRENGTH = 0.7
SHADE_RANGE = (0.45, 1.35)
SHADE_BLUR_PX = 8.0        # luminance is averaged over blocks of this many template pixels, then upsampled
EDGE_SOFTNESS_PX = 1.2
SDF_STEP = 4               # distance fields are sampled every this many pixels and upsampled bilinearly

PALETTE = np.array([[236, 236, 236], [140, 185, 225], [110, 160, 130], [38, 38, 42]], np.float32)

_COS = np.cos(np.linspace(0.0, 2.0 * np.pi, 12, endpoint=False) - np.pi / 2)
_SIN = np.sin(np.linspace(0.0, 2.0 * np.pi, 12, endpoint=False) - np.pi / 2)


def _ellipse(center_v, radius_u, radius_v):
    """Returns 12 (u, v) points on an ellipse, starting at the top, clockwise on screen."""
    return np.stack([radius_u * _COS, center_v + radius_v * _SIN], axis=1)


# Outlines in the face frame, 12 vertices each, clockwise on screen starting at the top.
OUTLINES = np.array([
    # surgical: flat top over the nose, straight sides, wide, under the chin
    [[-0.45, 0.02], [0.45, 0.02], [0.95, 0.1], [1.05, 0.35], [1.05, 0.65], [0.85, 0.95],
     [0.4, 1.1], [-0.4, 1.1], [-0.85, 0.95], [-1.05, 0.65], [-1.05, 0.35], [-0.95, 0.1]],
    # N95: a rounded cup
    _ellipse(0.54, 0.92, 0.56),
    # KN95: pointed over the nose and at the chin (the fold)
    [[0.0, -0.06], [0.35, 0.02], [0.8, 0.15], [1.0, 0.38], [0.9, 0.7], [0.5, 0.95],
     [0.0, 1.1], [-0.5, 0.95], [-0.9, 0.7], [-1.0, 0.38], [-0.8, 0.15], [-0.35, 0.02]],
    # cloth: snug and rounded, a little narrower
    [[-0.3, 0.04], [0.3, 0.04], [0.7, 0.12], [0.92, 0.35], [0.92, 0.62], [0.75, 0.88],
     [0.35, 1.04], [-0.35, 1.04], [-0.75, 0.88], [-0.92, 0.62], [-0.92, 0.35], [-0.7, 0.12]],
    # gas-like: a narrow snout (the cartridges are discs below)
    [[-0.25, 0.0], [0.25, 0.0], [0.55, 0.15], [0.68, 0.4], [0.66, 0.68], [0.5, 0.92],
     [0.22, 1.04], [-0.22, 1.04], [-0.5, 0.92], [-0.66, 0.68], [-0.68, 0.4], [-0.55, 0.15]],
], np.float32)

PLEAT_AMPLITUDE = np.array([0.22, 0.0, 0.0, 0.0, 0.0], np.float32)
PLEAT_COUNT = 3.0
SEAM_AMPLITUDE = np.array([0.0, 0.0, 0.3, 0.18, 0.0], np.float32)
SEAM_WIDTH_PX = 0.9
# Two discs per type: (u, v, radius_u, radius_v), added to the outline and darkened by DISC_SHADE (a valve,
# filter cartridges). Unused ones sit far below the image.
_NO_DISC = [0.0, 10.0, 0.01, 0.01]
DISCS = np.array([
    [_NO_DISC, _NO_DISC],
    [[0.42, 0.62, 0.17, 0.13], _NO_DISC],
    [_NO_DISC, _NO_DISC],
    [_NO_DISC, _NO_DISC],
    [[-0.72, 0.78, 0.34, 0.27], [0.72, 0.78, 0.34, 0.27]],
], np.float32)
DISC_SHADE = np.array([1.0, 0.72, 1.0, 1.0, 0.5], np.float32)

# Texture z = a1*s1 + a2*s2 + a12*s1*s2 + a3*s3 + a4*s4 + bias over waves s1 (0 deg), s2 (90), s3 (60), s4 (120).
TEXTURE_WEIGHTS = np.array([
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # stripes
    [0.0, 0.0, 1.5, 0.0, 0.0, 0.0],      # checks
    [0.7, 0.7, 0.0, 0.0, 0.0, -0.9],     # dots
    [0.6, 0.0, 0.0, 0.6, 0.6, -0.6],     # floral-like hexagonal interference
], np.float32)

# Columns of the per-image uniform draw.
_R_LABEL, _R_TYPE, _R_COLOUR, _R_TEXTURED, _R_PATTERN, _R_PERIOD, _R_ANGLE = range(7)
_R_PHASE = slice(7, 10)
_R_POSE = 10
_R_JITTER = slice(11, 16)       # centre x, bridge y, chin y, left width, right width
_R_RGB = slice(16, 19)
_R_TEX_A = slice(19, 22)
_R_TEX_B = slice(22, 25)
_NUM_RANDOM = 25


def template_points(image_size=112):
    """Returns the ArcFace template's five points [5, 2] float32 in pixels of an ``image_size`` square (pixel
    centres at integers, as landmarks in records are)."""
    return ((ARCFACE_TEMPLATE + 0.5) * (image_size / TEMPLATE_SIZE) - 0.5).astype(np.float32)


def anchor_values(points):
    """Returns the mask anchors of five landmarks ``points`` [..., 5, 2] (numpy array or tensor, pixels).

    Returns a dict of [...] arrays: ``bridge_x``, ``bridge_y`` (nose bridge), ``left_x``, ``right_x``
    (cheeks, outside the eyes), ``cheek_y``, ``chin_x``, ``chin_y`` (below the mouth) and ``eye_line`` (the
    lower eye plus a margin; masks never reach above it). Plain arithmetic, so numpy and TensorFlow both work.
    """
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = ((points[..., i, 0], points[..., i, 1]) for i in range(5))
    eye_mid_x, eye_mid_y, mouth_x, mouth_y = (lx + rx) / 2, (ly + ry) / 2, (mlx + mrx) / 2, (mly + mry) / 2
    eye_distance = ((rx - lx) ** 2 + (ry - ly) ** 2) ** 0.5
    lower_eye = (ly + ry + abs(ly - ry)) / 2
    return {
        "bridge_x": eye_mid_x + BRIDGE_FRACTION * (nx - eye_mid_x),
        "bridge_y": eye_mid_y + BRIDGE_FRACTION * (ny - eye_mid_y),
        "left_x": lx - CHEEK_OFFSET * eye_distance,
        "right_x": rx + CHEEK_OFFSET * eye_distance,
        "cheek_y": (ny + mouth_y) / 2,
        "chin_x": mouth_x + CHIN_DROP * (mouth_x - nx),
        "chin_y": mouth_y + CHIN_DROP * (mouth_y - ny),
        "eye_line": lower_eye + EYE_MARGIN * eye_distance,
    }


def template_anchors(image_size=112):
    """Returns the six mask anchors for a square aligned face of ``image_size`` pixels.

    Returns a dict of float32 (x, y) numpy arrays in pixel coordinates of that size: ``nose_bridge``,
    ``left_cheek``, ``right_cheek``, ``mouth_left``, ``mouth_right``, ``chin``, plus the float ``eye_line``
    (the lowest row of the eyes plus a margin; masks never reach above it).
    """
    points = template_points(image_size)
    a = anchor_values(points)
    pair = lambda x, y: np.array([x, y], np.float32)   # noqa: E731
    return {"nose_bridge": pair(a["bridge_x"], a["bridge_y"]), "left_cheek": pair(a["left_x"], a["cheek_y"]),
            "right_cheek": pair(a["right_x"], a["cheek_y"]), "mouth_left": points[3], "mouth_right": points[4],
            "chin": pair(a["chin_x"], a["chin_y"]), "eye_line": float(a["eye_line"])}


def first_mask_row(image_size=112):
    """Returns the first pixel row a mask may change; every row above it is left untouched."""
    return int(math.floor(template_anchors(image_size)["eye_line"]))


class MaskAugmenter:
    """Paints random MaskTheFace-style masks on a batch of aligned faces.

    ``MaskAugmenter(probability=0.5, seed=None)(images, seed=None) -> (images, mask_labels)``.

    Args:
      probability: chance that each image gets a mask (0 disables, 1 masks every image).
      seed: int or None. With a seed the masks are a pure function of (seed, call seed, images).

    Reproducibility: pass a per-batch ``seed`` (int tensor [2], e.g. ``[epoch, batch_index]``) to the call for
    a stream of batches; it is folded into the instance seed. Without a call seed, an instance seed gives the
    same masks on every call, and no seed at all draws fresh (not reproducible) masks each call.
    """

    def __init__(self, probability=0.5, seed=None):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"mask probability must be in [0, 1], got {probability}")
        self.probability = float(probability)
        self.seed = seed

    def __call__(self, images, seed=None, landmarks=None):
        """Masks a random subset of ``images``.

        Args:
          images: uint8 or float32 (values 0..255) tensor [B, S, S, 3], RGB faces aligned to the ArcFace
            template scaled to S (S static; 112 normally, any square size works).
          seed: optional int tensor [2] varying the masks per call deterministically.
          landmarks: optional float32 [B, 5, 2] five landmarks per image (pixels of these images, template
            order); masks are fitted to them. Rows with a non-finite value, and all images when None, use the
            template.

        Returns:
          ``(images, mask_labels)``: the images in the input dtype (only images with label 1 differ, and only
          below the eye line) and int32 [B] labels, 1 where a mask was painted.
        """
        images = tf.convert_to_tensor(images)
        size = images.shape[1]
        if images.shape.rank != 4 or size is None or images.shape[2] != size or images.shape[3] != 3:
            raise ValueError(f"MaskAugmenter expects images [B, S, S, 3] with a static square size S, "
                             f"got shape {images.shape}")
        if images.dtype not in (tf.uint8, tf.float32):
            raise ValueError(f"MaskAugmenter expects uint8 or float32 images, got {images.dtype.name}")
        batch = tf.shape(images)[0]
        draws = tf.random.stateless_uniform([batch, _NUM_RANDOM], self._seed(seed))
        labels = tf.cast(draws[:, _R_LABEL] < self.probability, tf.int32)
        chosen = tf.cast(tf.where(labels > 0)[:, 0], tf.int32)
        kept = tf.cast(tf.where(labels == 0)[:, 0], tf.int32)
        chosen_landmarks = None if landmarks is None else tf.gather(landmarks, chosen)
        painted = paint_masks(tf.gather(images, chosen), tf.gather(draws, chosen), chosen_landmarks)
        # Stitching the kept and painted images (disjoint indices) is much cheaper than tensor_scatter_nd_update.
        merged = tf.dynamic_stitch([kept, chosen], [tf.gather(images, kept), painted])
        merged.set_shape(images.shape)
        return merged, labels

    def _seed(self, call_seed):
        """Returns the int32 [2] stateless seed for one call."""
        if call_seed is None and self.seed is None:
            return tf.random.uniform([2], 0, np.iinfo(np.int32).max, dtype=tf.int32)
        seed = tf.constant([self.seed or 0, 0], tf.int32)
        if call_seed is not None:
            call_seed = tf.cast(tf.reshape(call_seed, [2]), tf.int32)
            seed = tf.random.experimental.stateless_fold_in(seed, call_seed[0])
            seed = tf.random.experimental.stateless_fold_in(seed, call_seed[1])
        return seed


def paint_masks(images, draws, landmarks=None):
    """Paints one mask on every image.

    Args:
      images: uint8 or float32 (0..255) [M, S, S, 3] aligned faces.
      draws: float32 [M, 25] uniform random numbers in [0, 1) choosing each mask (type, colour, texture,
        jitter, pose); column 0 is unused here (it decided the label).
      landmarks: optional float32 [M, 5, 2] landmarks (pixels, template order) the masks are fitted to; rows
        with a non-finite value use the template. None: the template for all (cheaper: no warps).

    Returns:
      The images, same dtype and shape, masked below the eye line only.
    """
    if landmarks is None:
        return _paint_on_template(images, draws)
    return _paint_on_landmarks(images, draws, landmarks)


def mask_alpha(images, draws, landmarks=None):
    """Returns the mask coverage float32 [M, S, S] in [0, 1] that ``paint_masks`` paints with the same arguments
    (1 where the mask replaces the face; for measuring where masks land)."""
    size = images.shape[1]
    if landmarks is None:
        top, bottom, left, right = _window(size, 0.0)
        geometry = _mask_geometry(draws, size)
        lower = tf.cast(images[:, top:, left:right], tf.float32)
        _, alpha = _mask_layer(_window_shading(lower, size), draws, geometry, _pixels(left, right),
                               _pixels(top, bottom), template_anchors(size)["eye_line"], size)
        return tf.pad(alpha, [[0, 0], [top, 0], [left, size - right]])
    return _landmark_layer_upsampled(images, draws, landmarks)[..., 3]


def _pixels(start, stop):
    return tf.range(start, stop, dtype=tf.float32)


def _paint_on_template(images, draws):
    """paint_masks without landmarks: the template's frame, computed only in the window below the eye line."""
    size = images.shape[1]
    top, _, left, right = _window(size, 0.0)
    lower = tf.cast(images[:, top:, left:right], tf.float32)
    height, width = lower.shape[1], lower.shape[2]
    colour, alpha = _mask_layer(_window_shading(lower, size), draws, _mask_geometry(draws, size),
                                _pixels(left, right), _pixels(top, size), template_anchors(size)["eye_line"], size)
    painted = tf.reshape(lower, [-1, height * width, 3]) * _outer(1.0 - alpha, tf.ones([1, 3])) + colour
    painted = _to_dtype(tf.reshape(painted, [-1, height, width, 3]), images.dtype)
    middle = tf.concat([images[:, top:, :left], painted, images[:, top:, right:]], axis=2)
    return tf.concat([images[:, :top], middle], axis=1)


def _paint_on_landmarks(images, draws, landmarks):
    """paint_masks with landmarks: the mask layer warped from each face's canonical frame onto the image."""
    layer = _landmark_layer_upsampled(images, draws, landmarks)
    alpha, colour = layer[..., 3:], layer[..., :3]
    return _to_dtype(tf.cast(images, tf.float32) * (1.0 - alpha) + colour, images.dtype)


def _to_dtype(painted, dtype):
    """Returns float32 ``painted`` (0..255) in ``dtype``.

    Truncation, not rounding, for uint8: a pixel with alpha = 0 is exactly its integer value, and the up to one
    level darker painted pixels do not matter for augmentation; it saves a full-size op.
    """
    if dtype == tf.uint8:
        return tf.saturate_cast(painted, tf.uint8)
    return tf.clip_by_value(painted, 0.0, 255.0)


def _outer(field, rows):
    """Returns field [M, H, W] x rows [M or 1, 1, C] as [M, H*W, C]: broadcasting a field over the channels is
    slow in TF; an outer product as a batched matmul (K = 1) is several times faster."""
    shape = tf.shape(field)
    return tf.matmul(tf.reshape(field, [-1, shape[1] * shape[2], 1]), rows)


def _filled(landmarks, template):
    """Returns the landmarks [M, 5, 2] with every row holding a non-finite value replaced by ``template`` [5, 2]."""
    valid = tf.reduce_all(tf.math.is_finite(landmarks), axis=[1, 2])
    return tf.where(valid[:, None, None], landmarks, template[None])


def fit_similarity(landmarks, size):
    """Returns the least-squares similarity template -> ``landmarks`` [M, 5, 2] (pixels of an S = ``size`` image).

    Returns float32 ``(a, b, tx, ty)``, each [M]: a landmark p ~ [[a, -b], [b, a]] t + (tx, ty) for the template
    point t. Rows with a non-finite landmark get the identity. Closed form (Umeyama without reflection).
    """
    template_np = template_points(size)
    template = tf.constant(template_np)
    points = _filled(landmarks, template)
    source = template - tf.reduce_mean(template, axis=0)
    centre = tf.reduce_mean(points, axis=1)
    target = points - centre[:, None]
    norm = tf.reduce_sum(tf.square(source))
    a = tf.reduce_sum(source[None, :, 0] * target[..., 0] + source[None, :, 1] * target[..., 1], axis=1) / norm
    b = tf.reduce_sum(source[None, :, 0] * target[..., 1] - source[None, :, 1] * target[..., 0], axis=1) / norm
    mean_x, mean_y = float(np.mean(template_np[:, 0])), float(np.mean(template_np[:, 1]))
    tx = centre[:, 0] - (a * mean_x - b * mean_y)
    ty = centre[:, 1] - (b * mean_x + a * mean_y)
    return a, b, tx, ty


def canonical_landmarks(landmarks, size):
    """Returns the landmarks [M, 5, 2] mapped into the template's frame by the inverse of ``fit_similarity``,
    kept within LANDMARK_REACH_PX (scaled) of the template (the template for rows without landmarks)."""
    a, b, tx, ty = fit_similarity(landmarks, size)
    template = tf.constant(template_points(size))
    points = _filled(landmarks, template)
    det = (a * a + b * b)[:, None]
    dx, dy = points[..., 0] - tx[:, None], points[..., 1] - ty[:, None]
    canonical = tf.stack([(a[:, None] * dx + b[:, None] * dy) / det, (a[:, None] * dy - b[:, None] * dx) / det], -1)
    reach = LANDMARK_REACH_PX * size / TEMPLATE_SIZE
    return tf.clip_by_value(canonical, template - reach, template + reach)


def _landmark_layer_upsampled(images, draws, landmarks):
    """Returns ``_landmark_layer`` [M, S, S, 4], computed at 1/LANDMARK_DOWNSCALE of the side and upsampled."""
    size = images.shape[1]
    small = size // LANDMARK_DOWNSCALE
    if small < MIN_DOWNSCALED_SIZE or size % LANDMARK_DOWNSCALE:
        return _landmark_layer(images, draws, landmarks)
    layer = _landmark_layer(images, draws, landmarks, paint_size=small)
    return tf.image.resize(layer, [size, size], method="bilinear")


def _landmark_layer(images, draws, landmarks, paint_size=None):
    """Returns the premultiplied mask layer [M, P, P, 4] (RGB * alpha, alpha) in pixels of the image scaled to
    P = ``paint_size`` (the image's side S when None): the shading is sampled from the image, the mask painted in
    the face's canonical window and warped back by the fitted similarity."""
    full = images.shape[1]
    size = paint_size or full
    landmarks = (tf.cast(landmarks, tf.float32) + 0.5) * (size / full) - 0.5
    reach = LANDMARK_REACH_PX * size / TEMPLATE_SIZE
    top, bottom, left, right = _window(size, reach)
    a, b, tx, ty = fit_similarity(landmarks, size)
    zero = tf.zeros_like(a)
    anchors = anchor_values(canonical_landmarks(landmarks, size))
    shading = _warped_shading(images, (a, b, tx, ty), size, top, left)
    colour, alpha = _mask_layer(shading, draws, _mask_geometry(draws, size, anchors), _pixels(left, right),
                                _pixels(top, bottom), anchors["eye_line"][:, None, None], size)
    height, width = bottom - top, right - left
    layer = tf.concat([tf.reshape(colour, [-1, height, width, 3]), alpha[..., None]], axis=-1)
    det = a * a + b * b
    # Image pixel (x, y) -> canonical S^-1(x, y) -> window pixel (minus left, top).
    to_window = tf.stack([a / det, b / det, -(a * tx + b * ty) / det - left,
                          -b / det, a / det, (b * tx - a * ty) / det - top, zero, zero], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=layer, transforms=to_window, output_shape=[size, size], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")


def _mask_layer(shading, draws, geometry, x, y, eye_line, size):
    """Paints the masks on a window (pixels x [W] × y [H] of the mask's frame); ``shading(rows, columns)`` returns
    the shade [M, len(rows), len(columns)] in [0, 1] at those pixel offsets from (x[0], y[0]).

    Returns ``(colour, alpha)``: the premultiplied mask colour [M, H*W, 3] (0..255) and the coverage [M, H, W]
    in [0, 1], zero above ``eye_line`` (a float, or [M, 1, 1]).
    """
    soft = max(1.0, EDGE_SOFTNESS_PX * size / TEMPLATE_SIZE)
    # The smooth fields (mask and disc coverage before clipping, shading) share one coarse grid and one upsampling.
    fields = _coarse_fields(geometry, shading, x, y, size)
    height, width = y.shape[0], x.shape[0]
    mask_coverage, disc_coverage, shade = (fields[:, SDF_STEP:SDF_STEP + height, SDF_STEP:SDF_STEP + width, c]
                                           for c in range(3))
    # The top edge fades in below the eye line, so rows above it stay untouched even with jitter.
    top_fade = tf.clip_by_value((y[None, :, None] - eye_line) / soft, 0.0, 1.0)
    alpha = tf.clip_by_value(mask_coverage, 0.0, 1.0) * top_fade
    low, high = SHADE_RANGE
    shade = low + (high - low) * shade
    weight = alpha * _details(geometry, tf.clip_by_value(disc_coverage, 0.0, 1.0), x, y, size) * shade
    base, contrast = _mask_colours(draws)
    colour = _outer(weight, base[:, 0]) + _outer(weight * _texture(draws, x, y, size), contrast[:, 0])
    return colour, alpha


def _window(size, reach):
    """Returns the static window ``(top, bottom, left, right)`` of the canonical frame a mask can reach at the
    widest outline, pose and jitter, with the anchors moved up to ``reach`` pixels (0: the template's anchors;
    the window is then inside the image and starts at the eye line)."""
    anchors = template_anchors(size)
    outline_reach = max(np.abs(OUTLINES[..., 0]).max(), (np.abs(DISCS[..., 0]) + DISCS[..., 2]).max())
    centre = (anchors["nose_bridge"][0] + anchors["chin"][0]) / 2
    jitter = JITTER_PX * size / TEMPLATE_SIZE
    # The cheeks move with an eye and half the change of the eye distance, the centre with nose and mouth.
    half = (max(centre - anchors["left_cheek"][0], anchors["right_cheek"][0] - centre) + 2 * jitter + 2 * reach)
    half *= 1 + POSE_RANGE
    margin = 2.0 * max(1.0, EDGE_SOFTNESS_PX * size / TEMPLATE_SIZE) + jitter
    left = int(max(-reach, np.floor(centre - outline_reach * half - margin)))
    right = int(min(size + reach, np.ceil(centre + outline_reach * half + margin)))
    top = int(math.floor(anchors["eye_line"] - reach))
    bottom = size + int(math.ceil(reach))
    return top, bottom, left, right


def _column_window(size):
    """Returns the columns ``[left, right)`` a template-placed mask can reach."""
    _, _, left, right = _window(size, 0.0)
    return left, right


def _mask_geometry(draws, size, anchors=None):
    """Returns the per-image mask frame in pixels: vertices [M,12,2], discs [M,2,4], frame scalars [M].

    ``anchors``: ``anchor_values`` of each image's canonical landmarks ([M] tensors), the template's when None.
    """
    if anchors is None:
        anchors = anchor_values(template_points(size))
    scale = size / TEMPLATE_SIZE
    jitter = (draws[:, _R_JITTER] * 2.0 - 1.0) * JITTER_PX * scale
    pose = (draws[:, _R_POSE] * 2.0 - 1.0) * POSE_RANGE
    centre_x = (anchors["bridge_x"] + anchors["chin_x"]) / 2 + jitter[:, 0]
    top_y = anchors["bridge_y"] + jitter[:, 1]
    chin_y = anchors["chin_y"] + jitter[:, 2]
    left_w = (centre_x - anchors["left_x"] + jitter[:, 3]) * (1.0 + pose)
    right_w = (anchors["right_x"] - centre_x + jitter[:, 4]) * (1.0 - pose)
    mask_type = tf.minimum(tf.cast(draws[:, _R_TYPE] * len(MASK_TYPES), tf.int32), len(MASK_TYPES) - 1)
    frame = {"centre_x": centre_x, "top_y": top_y, "height": chin_y - top_y, "type": mask_type}

    def to_pixels(u, v):
        width = tf.where(u < 0.0, left_w[:, None], right_w[:, None])
        return centre_x[:, None] + u * width, top_y[:, None] + v * frame["height"][:, None], width

    outline = tf.gather(tf.constant(OUTLINES), mask_type)
    vx, vy, _ = to_pixels(outline[..., 0], outline[..., 1])
    disc = tf.gather(tf.constant(DISCS), mask_type)
    dx, dy, width = to_pixels(disc[..., 0], disc[..., 1])
    frame["vertices"] = tf.stack([vx, vy], axis=-1)
    frame["discs"] = tf.stack([dx, dy, disc[..., 2] * width, disc[..., 3] * frame["height"][:, None]], axis=-1)
    return frame


def _coarse_fields(geometry, shading, x, y, size):
    """Returns the smooth per-pixel fields of a window (pixels x [W] × y [H]; ``shading`` as in _mask_layer).

    Returns [M, H', W', 3]; crop to [:, SDF_STEP:SDF_STEP + H, SDF_STEP:SDF_STEP + W]. Channels: 0.5 - distance
    / softness to the mask (outline united with its discs) and to the discs (clip them to [0, 1] for an anti-aliased
    coverage), and the shading mapped linearly from SHADE_RANGE to [0, 1]. All three are upsampled from the
    coarse grid (see ``_coarse_grid``) in one resize; the distance transform is linear, so applying it before
    upsampling changes nothing.
    """
    soft = max(1.0, EDGE_SOFTNESS_PX * size / TEMPLATE_SIZE)
    coarse_x, coarse_y, rows, columns = _coarse_grid(x, y)
    mask, discs = _coarse_distances(geometry, coarse_x, coarse_y)
    shade = shading(rows, columns)
    fields = tf.stack([0.5 - mask / soft, 0.5 - discs / soft, shade], axis=-1)
    return tf.image.resize(fields, [len(rows) * SDF_STEP, len(columns) * SDF_STEP], method="bilinear")


def _coarse_grid(x, y):
    """Returns the coarse sample points ``(coarse_x, coarse_y)`` for the pixels x [W] × y [H], and their offsets
    from (x[0], y[0]) as numpy arrays ``(rows, columns)``.

    The fields are piecewise smooth, so they are evaluated on a grid SDF_STEP times coarser and upsampled
    bilinearly: straight edges stay exact, only corners round off slightly. The points lie where bilinear
    resizing (half-pixel centres) to SDF_STEP times the samples expects them, with one extra sample on each side
    so that no pixel lies beyond the outermost samples (where resizing would clamp): crop the upsampled fields
    to [SDF_STEP:SDF_STEP + H, SDF_STEP:SDF_STEP + W].
    """
    step = SDF_STEP
    coarse_width, coarse_height = -(-x.shape[0] // step) + 2, -(-y.shape[0] // step) + 2
    offsets = (step - 1) / 2 - step + step * np.arange(max(coarse_width, coarse_height), dtype=np.float32)
    rows, columns = offsets[:coarse_height], offsets[:coarse_width]
    return x[0] + tf.constant(columns), y[0] + tf.constant(rows), rows, columns


def _coarse_distances(geometry, coarse_x, coarse_y):
    """Returns the distances [M,h,w] (negative inside) to the mask (outline united with discs) and to the discs."""
    outline = _polygon_distance(geometry["vertices"], coarse_x, coarse_y)
    discs = tf.reduce_min(_disc_distances(geometry["discs"], coarse_x, coarse_y), axis=-1)
    return tf.minimum(outline, discs), discs


def _signed_distances(geometry, x, y):
    """Returns approximate pixel distances [M,H,W,2] to the mask (outline united with its discs) and to the discs.

    Negative inside; upsampled from the coarse grid exactly as the fields ``paint_masks`` uses.
    """
    coarse_x, coarse_y, rows, columns = _coarse_grid(x, y)
    fields = tf.stack(_coarse_distances(geometry, coarse_x, coarse_y), axis=-1)
    upsampled = tf.image.resize(fields, [len(rows) * SDF_STEP, len(columns) * SDF_STEP], method="bilinear")
    return upsampled[:, SDF_STEP:SDF_STEP + y.shape[0], SDF_STEP:SDF_STEP + x.shape[0]]


def _polygon_distance(vertices, x, y):
    """Distance [M,H,W] (negative inside) to the convex polygons ``vertices`` [M,V,2] on the grid x [W] × y [H]."""
    start, end = vertices, tf.roll(vertices, shift=-1, axis=1)
    edge = end - start
    normal = tf.stack([edge[..., 1], -edge[..., 0]], axis=-1)
    normal = normal / (tf.norm(normal, axis=-1, keepdims=True) + 1e-6)
    offset = tf.reduce_sum(normal * start, axis=-1)
    # Orient every normal outwards: the centroid must be on the negative side.
    centroid = tf.reduce_mean(vertices, axis=1, keepdims=True)
    side = tf.reduce_sum(normal * centroid, axis=-1) - offset
    sign = tf.where(side > 0.0, -1.0, 1.0)
    lines = tf.concat([normal, -offset[..., None]], axis=-1) * sign[..., None]       # [M, V, 3]
    height, width = tf.shape(y)[0], tf.shape(x)[0]
    gx, gy = tf.meshgrid(x, y)
    grid = tf.stack([tf.reshape(gx, [-1]), tf.reshape(gy, [-1]), tf.ones([height * width])], axis=1)
    distance = tf.reduce_max(tf.matmul(tf.broadcast_to(grid[None], [tf.shape(lines)[0], height * width, 3]),
                                       lines, transpose_b=True), axis=-1)
    return tf.reshape(distance, [-1, height, width])


def _disc_distances(discs, x, y):
    """Approximate distance [M,H,W,D] (negative inside) to the ellipses ``discs`` [M,D,4] (cx, cy, rx, ry)."""
    cx, cy, rx, ry = (discs[:, None, None, :, i] for i in range(4))
    ex = (x[None, None, :, None] - cx) / rx
    ey = (y[None, :, None, None] - cy) / ry
    return (tf.sqrt(ex * ex + ey * ey) - 1.0) * tf.minimum(rx, ry)


def _details(geometry, discs, x, y, size):
    """Multiplicative shade [M,H,W] of the type's details: pleats, a centre seam, darker discs (coverage [M,H,W])."""
    mask_type = geometry["type"]
    v = (y[None, :, None] - geometry["top_y"][:, None, None]) / geometry["height"][:, None, None]
    pleat = tf.nn.relu(tf.cos(2.0 * np.pi * PLEAT_COUNT * v)) ** 4
    pleat = 1.0 - tf.gather(tf.constant(PLEAT_AMPLITUDE), mask_type)[:, None, None] * pleat
    seam_width = SEAM_WIDTH_PX * size / TEMPLATE_SIZE
    seam = tf.exp(-tf.square((x[None, None, :] - geometry["centre_x"][:, None, None]) / seam_width))
    seam = 1.0 - tf.gather(tf.constant(SEAM_AMPLITUDE), mask_type)[:, None, None] * seam
    disc_darkening = 1.0 - tf.gather(tf.constant(DISC_SHADE), mask_type)[:, None, None]
    return (pleat * seam) * (1.0 - disc_darkening * discs)


def _mask_colours(draws):
    """Returns ``(base, contrast)`` [M,1,1,3] (0..255): mask colour = base + texture pattern * contrast.

    Plain masks (half of them) have zero contrast; textured ones blend a two-colour pattern with weight
    TEXTURE_WEIGHT into the colour, as MaskTheFace blends its pattern images.
    """
    count = len(COLOURS)
    colour_index = tf.minimum(tf.cast(draws[:, _R_COLOUR] * count, tf.int32), count - 1)
    fixed = tf.gather(tf.constant(PALETTE), tf.minimum(colour_index, len(PALETTE) - 1))
    colour = tf.where((colour_index == count - 1)[:, None], draws[:, _R_RGB] * 255.0, fixed)
    weight = tf.cast(draws[:, _R_TEXTURED] < 0.5, tf.float32)[:, None] * TEXTURE_WEIGHT
    first, second = draws[:, _R_TEX_A] * 255.0, draws[:, _R_TEX_B] * 255.0
    base = colour * (1.0 - weight) + first * weight
    contrast = (second - first) * weight
    return base[:, None, None, :], contrast[:, None, None, :]


def _texture(draws, x, y, size):
    """Returns the procedural pattern [M,H,W] in [0,1]: stripes, checks, dots or floral interference."""
    count = len(TEXTURES)
    kind = tf.minimum(tf.cast(draws[:, _R_PATTERN] * count, tf.int32), count - 1)
    low, high = TEXTURE_PERIOD_PX
    period = (low + (high - low) * draws[:, _R_PERIOD]) * size / TEMPLATE_SIZE
    angle = draws[:, _R_ANGLE] * np.pi
    frequency = 2.0 * np.pi / period
    phase = draws[:, _R_PHASE] * 2.0 * np.pi

    # z = a1*s1 + a2*s2 + a12*s1*s2 + a3*s3 + a4*s4 + bias with s = sin(ax + ay) = sin(ax)cos(ay) + cos(ax)sin(ay)
    # is a sum of 13 separable (row x column) terms, so the whole field is one batched matmul.
    w = tf.gather(tf.constant(TEXTURE_WEIGHTS), kind) * (0.25 * TEXTURE_SHARPNESS)             # [M, 6]
    rows, columns = [], []
    sin_cos = []
    for direction, phase_index in ((0.0, 0), (np.pi / 2, 1), (np.pi / 3, 2), (2 * np.pi / 3, 1)):
        along_x = (frequency * tf.cos(angle + direction))[:, None] * x[None, :] + phase[:, phase_index][:, None]
        along_y = (frequency * tf.sin(angle + direction))[:, None] * y[None, :]
        sin_cos.append((tf.sin(along_x), tf.cos(along_x), tf.sin(along_y), tf.cos(along_y)))
    for k, weight_index in enumerate((0, 1, 3, 4)):
        sx, cx, sy, cy = sin_cos[k]
        wk = w[:, weight_index][:, None]
        rows += [wk * cy, wk * sy]
        columns += [sx, cx]
    (s1x, c1x, s1y, c1y), (s2x, c2x, s2y, c2y) = sin_cos[0], sin_cos[1]
    w12 = w[:, 2][:, None]
    rows += [w12 * c1y * c2y, w12 * c1y * s2y, w12 * s1y * c2y, w12 * s1y * s2y]
    columns += [s1x * s2x, s1x * c2x, c1x * s2x, c1x * c2x]
    rows.append(tf.broadcast_to(0.5 + w[:, 5][:, None], tf.shape(rows[0])))
    columns.append(tf.ones_like(columns[0]))
    z = tf.matmul(tf.stack(rows, axis=2), tf.stack(columns, axis=1))                        # [M, H, W]
    # A clipped ramp instead of a sigmoid: the same soft edges without an exp per pixel.
    return tf.clip_by_value(z, 0.0, 1.0)


def _interpolation_matrix(positions, blocks, length):
    """Returns the [len(positions), blocks] bilinear weights resizing ``blocks`` samples to ``length`` pixels
    (half-pixel centres, as tf.image.resize) evaluated at the pixel ``positions``."""
    source = np.clip((np.asarray(positions, np.float64) + 0.5) * blocks / length - 0.5, 0.0, blocks - 1)
    lower = np.minimum(np.floor(source).astype(int), blocks - 1)
    upper = np.minimum(lower + 1, blocks - 1)
    fraction = source - lower
    matrix = np.zeros([len(source), blocks], np.float32)
    matrix[np.arange(len(source)), lower] += 1.0 - fraction
    matrix[np.arange(len(source)), upper] += fraction
    return matrix


def _window_shading(lower, size):
    """Returns the ``shading(rows, columns)`` function of the window ``lower`` [M,H,W,3] (see ``_shading``)."""
    return lambda rows, columns: _shading(lower, size, rows, columns)


def _warped_shading(images, similarity, size, top, left):
    """Returns the ``shading(rows, columns)`` function of a canonical window at (left, top) of faces ``images``
    [M,S,S,3] placed by ``similarity`` (a, b, tx, ty; in pixels of the image scaled to ``size``), as ``_shading``
    computes it, but from the blurred luminance of the image sampled at the mapped points (no full-size warp)."""
    pixel_ratio = images.shape[1] / size          # image pixels per painting pixel
    block = max(2, int(round(SHADE_BLUR_PX * images.shape[1] / TEMPLATE_SIZE)))
    blurred = tf.nn.avg_pool2d(tf.cast(images, tf.float32), block, block, "SAME")
    luminance = tf.reduce_sum(blurred * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    a, b, tx, ty = similarity
    zero = tf.zeros_like(a)

    def shading(rows, columns):
        # Coarse sample (i, j) is canonical point (left + columns[0] + j * step, top + rows[0] + i * step) -> painting
        # pixel S(p) -> image pixel (S(p) + 0.5) * ratio - 0.5 -> block coordinates (pixel + 0.5) / block - 0.5.
        step = float(rows[1] - rows[0]) if len(rows) > 1 else 1.0
        x0, y0 = left + float(columns[0]), top + float(rows[0])
        scale, k = step * pixel_ratio / block, pixel_ratio / block
        to_blocks = tf.stack([a * scale, -b * scale, (a * x0 - b * y0 + tx + 0.5) * k - 0.5,
                              b * scale, a * scale, (b * x0 + a * y0 + ty + 0.5) * k - 0.5, zero, zero], axis=1)
        sampled = tf.raw_ops.ImageProjectiveTransformV3(
            images=luminance, transforms=to_blocks, output_shape=[len(rows), len(columns)], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="NEAREST")[..., 0]
        mean = tf.reduce_mean(sampled, axis=[1, 2])
        ratio = sampled / (mean[:, None, None] + 1.0)
        low, high = SHADE_RANGE
        return (tf.clip_by_value(1.0 + SHADE_STRENGTH * (ratio - 1.0), low, high) - low) / (high - low)

    return shading


def _shading(lower, size, rows, columns):
    """Shade following the face's blurred luminance (``lower`` [M,H,W,3]) relative to its mean there.

    Returns [M, len(rows), len(columns)], sampled at those pixel offsets in the window and mapped linearly from
    SHADE_RANGE to [0, 1]. The blur is coarse enough that the mouth and nose do not show through the mask, only
    the lighting.
    """
    block = max(2, int(round(SHADE_BLUR_PX * size / TEMPLATE_SIZE)))
    blurred = tf.nn.avg_pool2d(lower, block, block, "SAME")
    luminance = tf.reduce_sum(blurred * tf.constant([0.299, 0.587, 0.114]), axis=-1)
    mean = tf.reduce_mean(luminance, axis=[1, 2])
    ratio = luminance / (mean[:, None, None] + 1.0)
    low, high = SHADE_RANGE
    shade = (tf.clip_by_value(1.0 + SHADE_STRENGTH * (ratio - 1.0), low, high) - low) / (high - low)
    height, width = lower.shape[1], lower.shape[2]
    along_y = tf.constant(_interpolation_matrix(rows, -(-height // block), height))
    along_x = tf.constant(_interpolation_matrix(columns, -(-width // block), width))
    return tf.matmul(tf.matmul(along_y[None], shade), along_x[None], transpose_b=True)


PLACEMENT_CHECKS = ("nose", "mouth_corners", "eyes_untouched")


def placement_checks(alpha, landmarks):
    """Returns bool [M, 3], the PLACEMENT_CHECKS of each mask ``alpha`` [M, S, S] (from ``mask_alpha``) at the
    true ``landmarks`` [M, 5, 2] (pixels, template order): it covers the nose tip, it covers both mouth corners
    (alpha >= 0.5 at the nearest pixel), it leaves both eye centres untouched (alpha = 0). A mask is right when
    all three hold."""
    alpha = np.asarray(alpha)
    points = np.clip(np.rint(np.asarray(landmarks)), 0, alpha.shape[1] - 1).astype(int)
    at = alpha[np.arange(len(alpha))[:, None], points[..., 1], points[..., 0]]         # [M, 5]
    return np.stack([at[:, 2] >= 0.5, (at[:, 3:] >= 0.5).all(axis=1), (at[:, :2] == 0.0).all(axis=1)], axis=1)
