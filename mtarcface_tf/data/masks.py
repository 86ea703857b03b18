"""MaskTheFace-style face masks painted on aligned faces, in pure TensorFlow ops, vectorised over the batch.

MaskTheFace (Anwar & Raychowdhury, 2020) fits a mask picture to dlib landmarks, one image at a time (a few
images/s). Here every mask is an implicit shape evaluated on the pixel grid of the whole batch at once:

* the mask is placed from that image's five landmarks, as MaskTheFace fits its masks: a least-squares similarity
  maps the landmarks onto the ArcFace template (the face's in-plane rotation, scale and position); in that
  canonical frame six anchor points come from the mapped landmarks (nose bridge, left/right cheek from the eyes,
  a chin point below the mouth), so the landmarks' asymmetry (a turned head: nose and mouth off the eye midpoint)
  makes one side of the mask narrower. Images without landmarks use the template. Anchors are jittered per
  image and a random left/right "pose" widens one side;
* each mask type (surgical, N95, KN95, cloth, gas-like) is a 12-vertex convex outline in a face frame spanned
  by those anchors (u: -1 left cheek .. +1 right cheek, v: 0 nose bridge .. 1 chin), plus per-type details
  (pleats, a centre seam, a valve, filter cartridges) gathered from small parameter tables, so no branch
  depends on the type;
* everything painting needs in the canonical frame (the outline's edge lines, the eye line, the discs' axes,
  u, v, the texture's waves) is linear there, so it stays linear in image pixels under the similarity: the
  mask is painted directly in image coordinates, with no warp;
* coverage is a soft (anti-aliased) signed-distance test against the outline's half-planes, evaluated on a
  grid SDF_STEP times coarser (one batched matmul with the edge lines) and interpolated bilinearly (two
  matmuls), which keeps straight edges exact;
* half the masks are a plain colour (white, light blue, green, black or random), half a procedural texture
  (stripes, checks, dots, floral interference) blended 50/50 with the colour, as MaskTheFace does;
* the mask colour is shaded by the blurred luminance of the face under it, relative to its mean;
* the mask fades in below the line of the eyes plus a margin (in the canonical frame), so the eyes are never
  touched.

The painter is compiled with XLA (``tf.function(jit_compile=True)``, also inside tf.data), which fuses its
per-pixel steps. Only the images drawn to be masked are processed (gathered, painted, stitched back), so the
cost scales with the mask probability. Template-placed masks are computed in the static window below the eye
line that they can reach; fitted masks on the whole image.
"""
import math

import numpy as np
import tensorflow as tf

from mtarcface_tf.faces import align

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
# the mask's shape off the face.
LANDMARK_REACH_PX = 10.0

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
SHAPE_BUCKETS = 8          # MaskAugmenter pads the painted images to a multiple of batch / SHAPE_BUCKETS

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
PLEAT_WIDTH = 0.25         # half-width of a pleat's darkening, as a fraction of the pleat spacing
SEAM_AMPLITUDE = np.array([0.0, 0.0, 0.3, 0.18, 0.0], np.float32)
SEAM_WIDTH_PX = 1.2       # half-width of the seam line
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
    return align.template_for(image_size)


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
        # The painter is compiled per shape: pad the chosen images to a multiple of B / SHAPE_BUCKETS, so that a
        # batch size sees a few shapes only (the padding repeats an image and is dropped after painting).
        count = tf.size(chosen)
        bucket = tf.maximum(1, (batch + SHAPE_BUCKETS - 1) // SHAPE_BUCKETS)
        padded = tf.concat([chosen, tf.zeros([(count + bucket - 1) // bucket * bucket - count], tf.int32)], 0)
        chosen_landmarks = None if landmarks is None else tf.gather(landmarks, padded)
        painted = paint_masks(tf.gather(images, padded), tf.gather(draws, padded), chosen_landmarks)[:count]
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
      images: uint8 or float32 (0..255) [M, S, S, 3] aligned faces (S static).
      draws: float32 [M, 25] uniform random numbers in [0, 1) choosing each mask (type, colour, texture,
        jitter, pose); column 0 is unused here (it decided the label).
      landmarks: optional float32 [M, 5, 2] landmarks (pixels, template order) the masks are fitted to; rows
        with a non-finite value, and all rows when None, use the template.

    Returns:
      The images, same dtype and shape, masked below each face's eye line only.
    """
    return _paint_compiled(images, draws, landmarks, alpha_only=False)


def mask_alpha(images, draws, landmarks=None):
    """Returns the mask coverage float32 [M, S, S] in [0, 1] that ``paint_masks`` paints with the same arguments
    (1 where the mask replaces the face; for measuring where masks land)."""
    return _paint_compiled(images, draws, landmarks, alpha_only=True)


@tf.function(jit_compile=True)
def _paint_compiled(images, draws, landmarks, alpha_only):
    """``_paint`` compiled by XLA: its few dozen per-pixel steps fuse into a handful of loops (in the training
    pipeline, masks cost about 21-28% of decode-only throughput this way, 29-32% as separate TF ops; see
    bench/pipeline.py). One compilation per (shape, dtype, placement), cached for the process;
    ``MaskAugmenter`` pads the number of images to a few sizes to keep the shapes few. ``alpha_only`` (a Python
    bool, traced separately) returns ``mask_alpha``'s coverage instead of the images; XLA drops the other output's
    work."""
    painted, alpha = _paint(images, draws, landmarks)
    return alpha if alpha_only else painted


def _paint(images, draws, landmarks):
    """Returns ``(painted images, alpha [M, S, S])`` of ``paint_masks``. Template-placed masks are computed in
    the static window they can reach (below the eye line, between the cheeks), fitted ones on the whole image."""
    size = images.shape[1]
    top, left, right = (0, 0, size) if landmarks is not None else _template_window(size)
    frame = _image_frame(draws, size, landmarks)
    window = tf.cast(images[:, top:, left:right], tf.float32)
    colour, alpha = _mask_layer(window, frame, draws, _pixels(left, right), _pixels(top, size), size)
    painted = _to_dtype(window * (1.0 - alpha)[..., None] + colour, images.dtype)
    middle = tf.concat([images[:, top:, :left], painted, images[:, top:, right:]], axis=2)
    return tf.concat([images[:, :top], middle], axis=1), tf.pad(alpha, [[0, 0], [top, 0], [left, size - right]])


def _template_window(size):
    """Returns the static window ``(top, left, right)`` (rows top..S, columns left..right) that a template-placed
    mask can reach at the widest outline, pose and jitter."""
    anchors = template_anchors(size)
    outline_reach = max(np.abs(OUTLINES[..., 0]).max(), (np.abs(DISCS[..., 0]) + DISCS[..., 2]).max())
    centre = (anchors["nose_bridge"][0] + anchors["chin"][0]) / 2
    jitter = JITTER_PX * size / TEMPLATE_SIZE
    half = max(centre - anchors["left_cheek"][0], anchors["right_cheek"][0] - centre) + 2 * jitter
    half *= 1 + POSE_RANGE
    margin = 2.0 * _softness(size) + jitter
    left = int(max(0, np.floor(centre - outline_reach * half - margin)))
    right = int(min(size, np.ceil(centre + outline_reach * half + margin)))
    return first_mask_row(size), left, right


def _pixels(start, stop):
    return tf.range(start, stop, dtype=tf.float32)


def _to_dtype(painted, dtype):
    """Returns float32 ``painted`` (0..255) in ``dtype``.

    Truncation, not rounding, for uint8: a pixel with alpha = 0 is exactly its integer value, and the up to one
    level darker painted pixels do not matter for augmentation.
    """
    if dtype == tf.uint8:
        return tf.saturate_cast(painted, tf.uint8)
    return tf.clip_by_value(painted, 0.0, 255.0)


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


def canonical_landmarks(landmarks, size, similarity=None):
    """Returns the landmarks [M, 5, 2] mapped into the template's frame by the inverse of ``fit_similarity``
    (or of ``similarity``, its result, when given), kept within LANDMARK_REACH_PX (scaled) of the template (the
    template for rows without landmarks)."""
    to_canonical = _inverse_similarity(similarity or fit_similarity(landmarks, size))
    template = tf.constant(template_points(size))
    points = _filled(landmarks, template)
    canonical = tf.matmul(points, to_canonical[..., :2], transpose_b=True) + to_canonical[:, None, :, 2]
    reach = LANDMARK_REACH_PX * size / TEMPLATE_SIZE
    return tf.clip_by_value(canonical, template - reach, template + reach)


def _inverse_similarity(similarity):
    """Returns the affine maps [M, 2, 3] from image pixels (x, y, 1) to canonical (x, y): the inverse of
    ``fit_similarity``'s ``(a, b, tx, ty)``."""
    a, b, tx, ty = similarity
    det = a * a + b * b
    return tf.stack([tf.stack([a / det, b / det, -(a * tx + b * ty) / det], axis=-1),
                     tf.stack([-b / det, a / det, (b * tx - a * ty) / det], axis=-1)], axis=1)


def _softness(size):
    """Returns the anti-aliasing width of mask edges, in template-frame pixels of an ``size`` image."""
    return max(1.0, EDGE_SOFTNESS_PX * size / TEMPLATE_SIZE)


def _image_frame(draws, size, landmarks):
    """Returns each mask's shape as linear functions of image pixels (x, y).

    The mask is laid out in the face's canonical (template) frame (``_mask_geometry``); every quantity painting
    needs there is linear in the canonical coordinates, so it stays linear in image pixels under the fitted
    similarity: coefficients ``[M, ..., 3]`` of c0 * x + c1 * y + c2. Keys: ``lines`` [M,12,3] (signed canonical
    distance to each outline edge, positive outside), ``eye`` [M,3] (distance above the eye line, shifted so
    that alpha is 0 on and above it), ``disc_x``/``disc_y`` [M,2,3] (offsets from each disc's centre in radii),
    ``disc_scale`` [M,2], ``u`` [M,3] (offset from the centre line in seam widths), ``v`` [M,3] (0 at the top of
    the mask, 1 at its bottom), ``waves`` [M,4,3] (texture phases) and ``type`` [M].
    """
    count = tf.shape(draws)[0]
    zeros, ones = tf.zeros([count]), tf.ones([count])
    if landmarks is None:
        similarity, anchors = (ones, zeros, zeros, zeros), anchor_values(template_points(size))
    else:
        landmarks = tf.cast(landmarks, tf.float32)
        similarity = fit_similarity(landmarks, size)
        anchors = anchor_values(canonical_landmarks(landmarks, size, similarity))
    geometry = _mask_geometry(draws, size, anchors)
    soft = _softness(size)
    cx, cy, rx, ry = tf.unstack(geometry["discs"], axis=-1)
    seam_width = SEAM_WIDTH_PX * size / TEMPLATE_SIZE
    canonical = {
        "lines": _polygon_lines(geometry["vertices"]),
        "eye": tf.stack([zeros, -ones, anchors["eye_line"] + zeros + 0.5 * soft], axis=-1),
        "disc_x": tf.stack([1.0 / rx, tf.zeros_like(rx), -cx / rx], axis=-1),
        "disc_y": tf.stack([tf.zeros_like(ry), 1.0 / ry, -cy / ry], axis=-1),
        "u": tf.stack([ones / seam_width, zeros, -geometry["centre_x"] / seam_width], axis=-1),
        "v": tf.stack([zeros, 1.0 / geometry["height"], -geometry["top_y"] / geometry["height"]], axis=-1),
        "waves": _texture_waves(draws, size),
    }
    to_canonical = _inverse_similarity(similarity)
    frame = {name: _to_image(coefficients, to_canonical) for name, coefficients in canonical.items()}
    frame["disc_scale"] = tf.minimum(rx, ry)
    frame["type"] = geometry["type"]
    return frame


def _to_image(coefficients, to_canonical):
    """Returns linear functions of canonical pixels (``coefficients`` [M, ..., 3]) as functions of image pixels,
    given the affine map ``to_canonical`` [M, 2, 3] from image (x, y, 1) to canonical (x, y)."""
    shape = tf.shape(coefficients)
    flat = tf.reshape(coefficients, [shape[0], -1, 3])
    mapped = tf.matmul(flat[..., :2], to_canonical) + flat[..., 2:] * tf.constant([0.0, 0.0, 1.0])
    return tf.reshape(mapped, shape)


def _mask_geometry(draws, size, anchors=None):
    """Returns the per-image mask frame in canonical pixels: vertices [M,12,2], discs [M,2,4], frame scalars [M].

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


def _polygon_lines(vertices):
    """Returns the edges [M,V,3] of the convex polygons ``vertices`` [M,V,2] as lines (nx, ny, c) with unit
    normals pointing outwards: nx * x + ny * y + c is the signed distance to the edge's line (positive outside),
    and the largest over the edges the distance to the polygon (exact near the edges, less near corners)."""
    start, end = vertices, tf.roll(vertices, shift=-1, axis=1)
    edge = end - start
    normal = tf.stack([edge[..., 1], -edge[..., 0]], axis=-1)
    normal = normal / (tf.norm(normal, axis=-1, keepdims=True) + 1e-6)
    offset = tf.reduce_sum(normal * start, axis=-1)
    # Orient every normal outwards: the centroid must be on the negative side.
    centroid = tf.reduce_mean(vertices, axis=1, keepdims=True)
    side = tf.reduce_sum(normal * centroid, axis=-1) - offset
    sign = tf.where(side > 0.0, -1.0, 1.0)
    return tf.concat([normal, -offset[..., None]], axis=-1) * sign[..., None]


def _coarse_samples(pixels):
    """Returns the coarse sample positions (float32) covering the pixel positions ``pixels`` [N]: every
    SDF_STEP-th pixel from the first, one past the last when needed.

    The fields are piecewise smooth, so they are evaluated on this grid and interpolated bilinearly
    (``_upsampling``): straight edges stay exact, only corners round off slightly.
    """
    count = (tf.size(pixels) - 1 + SDF_STEP - 1) // SDF_STEP + 1
    return pixels[0] + SDF_STEP * tf.range(count, dtype=tf.float32)


def _upsampling(pixels, samples):
    """Returns the [len(pixels), len(samples)] bilinear weights of ``_coarse_samples`` at the ``pixels``."""
    return _linear_weights((pixels - pixels[0]) / SDF_STEP, tf.size(samples))


def _linear_weights(source, count):
    """Returns the [len(source), count] weights of linear interpolation between ``count`` samples at the
    fractional sample indices ``source`` [N] (within 0..count - 1)."""
    return tf.nn.relu(1.0 - tf.abs(source[:, None] - tf.range(count, dtype=tf.float32)[None]))


_LINEAR_KEYS = ("lines", "eye", "disc_x", "disc_y", "u", "v")


def _evaluate(frame, x, y):
    """Evaluates all linear functions of ``frame`` on the grid x [W] × y [H] in one batched matmul; returns a
    dict of [M, H, W, D] (D = 12 edges for ``lines``, 2 discs for ``disc_x`` and ``disc_y``, else 1)."""
    height, width = tf.size(y), tf.size(x)
    gx, gy = tf.meshgrid(x, y)
    grid = tf.stack([tf.reshape(gx, [-1]), tf.reshape(gy, [-1]), tf.ones([height * width])], axis=1)
    parts = [frame[key] if frame[key].shape.rank == 3 else frame[key][:, None] for key in _LINEAR_KEYS]
    sizes = [part.shape[1] for part in parts]
    values = tf.matmul(grid[None], tf.concat(parts, axis=1), transpose_b=True)
    values = tf.reshape(values, [-1, height, width, sum(sizes)])
    return dict(zip(_LINEAR_KEYS, tf.split(values, sizes, axis=-1)))


def _distance_fields(values, frame):
    """Returns distances [M,H,W] in canonical pixels (negative inside), from ``_evaluate``'s ``values``: to the
    mask (outline united with its discs, cut at the eye line) and to the discs alone."""
    outline = tf.reduce_max(values["lines"], axis=-1)
    ex, ey = values["disc_x"], values["disc_y"]
    discs = tf.reduce_min((tf.sqrt(ex * ex + ey * ey) - 1.0) * frame["disc_scale"][:, None, None, :], axis=-1)
    return tf.maximum(tf.minimum(outline, discs), values["eye"][..., 0]), discs


def _coarse_fields(window, frame, x, y, size):
    """Returns the per-pixel fields of the window (pixels x [W] × y [H]), evaluated on the coarse grid and
    interpolated together, each [M,H,W]: ``mask`` and ``discs``, 0.5 - distance / softness to the mask and to its
    discs (clip them to [0, 1] for an anti-aliased coverage); ``shade``, the shading; ``u`` and ``v``, the mask's
    frame (in seam widths from the centre line; 0 at the top, 1 at the bottom). The maps of the distances are
    linear, and u and v are linear, so interpolating them is exact away from corners."""
    coarse_x, coarse_y = _coarse_samples(x), _coarse_samples(y)
    values = _evaluate(frame, coarse_x, coarse_y)
    mask, discs = _distance_fields(values, frame)
    soft = _softness(size)
    fields = {"mask": 0.5 - mask / soft, "discs": 0.5 - discs / soft,
              "shade": _shading(window, size, coarse_y - y[0], coarse_x - x[0]),
              "u": values["u"][..., 0], "v": values["v"][..., 0]}
    # Bilinear interpolation as two matmuls, all fields at once along the batch axis.
    stacked = tf.concat(list(fields.values()), axis=0)
    stacked = tf.matmul(tf.matmul(_upsampling(y, coarse_y)[None], stacked), _upsampling(x, coarse_x)[None],
                        transpose_b=True)
    return dict(zip(fields, tf.split(stacked, len(fields), axis=0)))


def _mask_layer(window, frame, draws, x, y, size):
    """Paints the masks on the image window ``window`` [M,H,W,3] (float32 0..255, pixels x [W] × y [H]).

    Returns ``(colour, alpha)``: the premultiplied mask colour [M, H, W, 3] (0..255) and the coverage [M, H, W]
    in [0, 1], zero on and above each face's eye line.
    """
    fields = _coarse_fields(window, frame, x, y, size)
    alpha = tf.clip_by_value(fields["mask"], 0.0, 1.0)
    weight = alpha * fields["shade"] * _details(fields, frame["type"])
    colours = _mask_colours(draws)[:, None, None]
    colour = weight[..., None] * (colours[..., 0, :] + _texture(frame, draws, x, y)[..., None] * colours[..., 1, :])
    return colour, alpha


def _details(fields, mask_type):
    """Multiplicative shade [M,H,W] of the type's details, from ``_coarse_fields``: pleats (PLEAT_COUNT per mask
    height, each a smooth bump of half-width PLEAT_WIDTH pleat spacings), a centre seam (a line of half-width
    SEAM_WIDTH_PX, triangular profile) and darker discs (DISC_SHADE). Polynomials only: no transcendental per
    pixel."""
    offset = PLEAT_COUNT * fields["v"]
    offset = (offset - tf.round(offset)) / PLEAT_WIDTH
    pleat = tf.square(tf.nn.relu(1.0 - tf.square(offset)))
    pleat = 1.0 - tf.gather(tf.constant(PLEAT_AMPLITUDE), mask_type)[:, None, None] * pleat
    seam = (1.0 - tf.gather(tf.constant(SEAM_AMPLITUDE), mask_type)[:, None, None]
            * tf.nn.relu(1.0 - tf.abs(fields["u"])))
    disc_darkening = 1.0 - tf.gather(tf.constant(DISC_SHADE), mask_type)[:, None, None]
    return pleat * seam * (1.0 - disc_darkening * tf.clip_by_value(fields["discs"], 0.0, 1.0))


def _mask_colours(draws):
    """Returns [M, 2, 3]: the colours ``base`` and ``contrast`` (0..255) of mask colour = base + texture pattern *
    contrast.

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
    return tf.stack([base, contrast], axis=1)


def _texture_waves(draws, size):
    """Returns the phases [M,4,3] of the texture's four plane waves as linear functions of canonical pixels:
    angles 0, 90, 60 and 120 degrees from a random direction, a random period and random phases."""
    low, high = TEXTURE_PERIOD_PX
    period = (low + (high - low) * draws[:, _R_PERIOD]) * size / TEMPLATE_SIZE
    angle = draws[:, _R_ANGLE] * np.pi
    frequency = 2.0 * np.pi / period
    phase = draws[:, _R_PHASE] * 2.0 * np.pi
    waves = [tf.stack([frequency * tf.cos(angle + direction), frequency * tf.sin(angle + direction),
                       phase[:, phase_index]], axis=-1)
             for direction, phase_index in ((0.0, 0), (np.pi / 2, 1), (np.pi / 3, 2), (2 * np.pi / 3, 1))]
    return tf.stack(waves, axis=1)


def _texture(frame, draws, x, y):
    """Returns the procedural pattern [M,H,W] in [0,1]: stripes, checks, dots or floral interference."""
    count = len(TEXTURES)
    kind = tf.minimum(tf.cast(draws[:, _R_PATTERN] * count, tf.int32), count - 1)
    # z = a1*s1 + a2*s2 + a12*s1*s2 + a3*s3 + a4*s4 + bias with s = sin(ax + ay) = sin(ax)cos(ay) + cos(ax)sin(ay)
    # is a sum of 13 separable (row x column) terms, so the whole field is one batched matmul.
    w = tf.gather(tf.constant(TEXTURE_WEIGHTS), kind) * (0.25 * TEXTURE_SHARPNESS)             # [M, 6]
    waves = frame["waves"]
    along_x = waves[:, :, None, 0] * x[None, None, :] + waves[:, :, None, 2]                   # [M, 4, W]
    along_y = waves[:, :, None, 1] * y[None, None, :]                                          # [M, 4, H]
    sin_x, cos_x, sin_y, cos_y = tf.sin(along_x), tf.cos(along_x), tf.sin(along_y), tf.cos(along_y)
    rows, columns = [], []
    for k, weight_index in enumerate((0, 1, 3, 4)):
        wk = w[:, weight_index][:, None]
        rows += [wk * cos_y[:, k], wk * sin_y[:, k]]
        columns += [sin_x[:, k], cos_x[:, k]]
    w12 = w[:, 2][:, None]
    rows += [w12 * cos_y[:, 0] * cos_y[:, 1], w12 * cos_y[:, 0] * sin_y[:, 1], w12 * sin_y[:, 0] * cos_y[:, 1],
             w12 * sin_y[:, 0] * sin_y[:, 1]]
    columns += [sin_x[:, 0] * sin_x[:, 1], sin_x[:, 0] * cos_x[:, 1], cos_x[:, 0] * sin_x[:, 1],
                cos_x[:, 0] * cos_x[:, 1]]
    rows.append(tf.broadcast_to(0.5 + w[:, 5][:, None], tf.shape(rows[0])))
    columns.append(tf.ones_like(columns[0]))
    z = tf.matmul(tf.stack(rows, axis=2), tf.stack(columns, axis=1))                        # [M, H, W]
    # A clipped ramp instead of a sigmoid: the same soft edges without an exp per pixel.
    return tf.clip_by_value(z, 0.0, 1.0)


def _interpolation_weights(positions, blocks, block):
    """Returns the [len(positions), blocks] bilinear weights sampling ``blocks`` averages of ``block`` pixels each
    (as avg_pool2d with stride ``block`` makes them) at the pixel ``positions`` (float32 [N], 0 = the first
    pixel); positions beyond the outer block centres take the outer block."""
    return _linear_weights(tf.clip_by_value((positions + 0.5) / block - 0.5, 0.0, tf.cast(blocks - 1, tf.float32)),
                           blocks)


def _shading(window, size, rows, columns):
    """Shade following the face's blurred luminance (``window`` [M,H,W,3]) relative to its mean there.

    Returns [M, len(rows), len(columns)] in SHADE_RANGE, sampled at those pixel offsets in the window. The blur
    is coarse enough that the mouth and nose do not show through the mask, only the lighting.
    """
    block = max(2, int(round(SHADE_BLUR_PX * size / TEMPLATE_SIZE)))
    # Luminance first, then one channel to average: the same numbers (both are linear) at a third of the pooling.
    luminance = tf.reduce_sum(window * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    luminance = tf.nn.avg_pool2d(luminance, block, block, "SAME")[..., 0]
    mean = tf.reduce_mean(luminance, axis=[1, 2])
    ratio = luminance / (mean[:, None, None] + 1.0)
    low, high = SHADE_RANGE
    shade = tf.clip_by_value(1.0 + SHADE_STRENGTH * (ratio - 1.0), low, high)
    blocks = tf.shape(luminance)
    along_y = _interpolation_weights(rows, blocks[1], block)
    along_x = _interpolation_weights(columns, blocks[2], block)
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
