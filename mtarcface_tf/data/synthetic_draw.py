"""Drawing primitives and face parts of SynthFaces, in ArcFace-template coordinates (112x112, y down).

A ``Canvas`` is a supersampled RGB uint8 image with a margin around the 112x112 template square, so the
pose warp applied afterwards never reaches past its border. Every part drawer takes the canvas, the
identity parameters (dict from ``synthetic.identity_params``) and the per-image ``state`` (expression, gaze)
and draws in template coordinates; colours are RGB float triples in 0..255.
"""
import cv2
import numpy as np

from mtarcface_tf.faces.align import ARCFACE_TEMPLATE, TEMPLATE_SIZE

CENTRE_X = TEMPLATE_SIZE / 2
_SHIFT = 4                      # cv2 fixed-point bits: sub-pixel accurate drawing
_ONE = 1 << _SHIFT
TEMPLE_Y, CHEEK_Y, JAW_Y = 40.0, 66.0, 94.0
SIDE_HAIR_Y = 45.0              # side hair ending below this row widens out to the cheeks
SCLERA = (238.0, 234.0, 228.0)
MOUTH_INSIDE = (70.0, 22.0, 28.0)
TEETH = (235.0, 230.0, 215.0)


def shade(colour, factor):
    """Returns ``colour`` (RGB triple) multiplied by ``factor``, clipped to 0..255, as a tuple of floats."""
    return tuple(min(255.0, max(0.0, float(c) * factor)) for c in colour)


def mix(a, b, t):
    """Returns the colour ``(1 - t) * a + t * b`` as a tuple of floats."""
    return tuple(float(x) * (1 - t) + float(y) * t for x, y in zip(a, b))


class Canvas:
    """An RGB uint8 canvas covering template coordinates [-margin, 112 + margin) at ``scale`` pixels per unit."""

    def __init__(self, background, scale, margin):
        self.image = background
        self.scale, self.margin = scale, margin

    def _pts(self, points):
        p = (np.asarray(points, np.float64) + self.margin) * self.scale + (self.scale - 1) / 2
        return np.round(p * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def _px(self, length):
        return max(1, int(round(length * self.scale)))

    def fill(self, points, colour):
        """Fills the polygon ``points`` [K, 2] (template coordinates) with ``colour``."""
        cv2.fillPoly(self.image, [self._pts(points)], colour, cv2.LINE_AA, _SHIFT)

    def line(self, points, colour, thickness):
        """Draws the open polyline ``points`` [K, 2] ``thickness`` template units wide."""
        cv2.polylines(self.image, [self._pts(points)], False, colour, self._px(thickness), cv2.LINE_AA, _SHIFT)

    def ellipse(self, centre, axes, angle, colour):
        """Fills an ellipse: ``centre`` (x, y), semi-axes ``axes`` (a, b), rotated ``angle`` degrees."""
        c = tuple(int(v) for v in self._pts(centre).ravel())
        ax = tuple(max(1, int(round(a * self.scale * _ONE))) for a in axes)
        cv2.ellipse(self.image, c, ax, float(angle), 0, 360, colour, -1,
                    cv2.LINE_AA, _SHIFT)

    def blend(self, points, colour, alpha, rng=None, soften=0.0, grain=0.35):
        """Paints ``colour`` over the polygon with opacity ``alpha``, edges blurred by ``soften`` template units.

        With ``rng``, the opacity is multiplied by uniform noise in [``grain``, 1) per canvas pixel (hair texture).
        Only the polygon's bounding box is touched.
        """
        pts = self._pts(points)
        pad = int(3 * soften * self.scale) + 2
        x0, y0 = np.maximum(pts.min(axis=(0, 1)) // _ONE - pad, 0)
        x1, y1 = np.minimum(pts.max(axis=(0, 1)) // _ONE + pad + 1, self.image.shape[1::-1])
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [pts - np.array([x0, y0], np.int32) * _ONE], 255, cv2.LINE_AA, _SHIFT)
        weight = mask.astype(np.float32) * np.float32(alpha / 255.0)
        if soften > 0:
            weight = cv2.GaussianBlur(weight, (0, 0), soften * self.scale)
        if rng is not None:
            weight *= rng.uniform(grain, 1.0, weight.shape).astype(np.float32)
        roi = self.image[y0:y1, x0:x1]
        weight = weight[..., None]
        roi[...] = (roi * (1 - weight) + np.asarray(colour, np.float32) * weight).astype(np.uint8)


def face_half_width(p, y):
    """Returns the half width of the face outline at rows ``y`` (array, template units) for identity ``p``."""
    y = np.asarray(y, np.float64)
    cap = p["face_w_temple"] * np.sqrt(np.clip(1 - ((TEMPLE_Y - y) / (TEMPLE_Y - p["crown_y"])) ** 2, 0, 1))
    middle = np.interp(y, [TEMPLE_Y, CHEEK_Y, JAW_Y], [p["face_w_temple"], p["face_w_cheek"], p["face_w_jaw"]])
    u = np.clip((y - JAW_Y) / (p["chin_y"] - JAW_Y), 0, 1)
    low = p["face_w_jaw"] * (1 - u ** p["chin_power"]) ** (1 / p["chin_power"])
    return np.where(y < TEMPLE_Y, cap, np.where(y <= JAW_Y, middle, low))


def _outline(p, y_top, y_bottom, inset=0.0, steps=24):
    """Returns the left side (top to bottom) and right side (bottom to top) of the face outline, inset inwards."""
    ys = np.linspace(y_top, y_bottom, steps)
    w = np.maximum(face_half_width(p, ys) - inset, 0)
    left = np.stack([CENTRE_X - w, ys], 1)
    right = np.stack([CENTRE_X + w, ys], 1)[::-1]
    return left, right


def draw_background(rng, shape, colours):
    """Returns a uint8 [H, W, 3] background: plain, gradient, blotchy or cluttered, from per-image ``rng``."""
    h, w = shape
    kind = rng.integers(4)
    c1, c2 = colours
    if kind == 0:
        return np.broadcast_to(np.asarray(c1, np.uint8), (h, w, 3)).copy()
    grid = 2 if kind == 1 else 5
    t = rng.random((grid, grid, 1))
    small = (c1 * (1 - t) + c2 * t).astype(np.uint8)
    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC if grid > 2 else cv2.INTER_LINEAR)
    if kind == 3:
        for _ in range(rng.integers(2, 6)):
            x0, y0, x1, y1 = (rng.random(4) * [w, h, w, h]).astype(int)
            cv2.rectangle(image, (x0, y0), (x1, y1), tuple(float(v) for v in rng.random(3) * 255), -1)
    return image


def draw_back_hair(canvas, p):
    """Hair behind the head and neck (long hair only)."""
    if p["hair_side_len"] < JAW_Y - 10:
        return
    width = p["face_w_cheek"] + p["hair_volume"] + 3
    arc = np.linspace(np.pi, 0, 13)
    top = p["crown_y"] - p["hair_volume"]
    cap = np.stack([CENTRE_X + width * np.cos(arc), TEMPLE_Y - (TEMPLE_Y - top) * np.sin(arc)], 1)
    bottom = [[CENTRE_X + width, p["hair_side_len"]], [CENTRE_X - width, p["hair_side_len"]]]
    canvas.fill(np.concatenate([cap, bottom]), shade(p["hair_colour"], 0.8))


def draw_head(canvas, p):
    """Neck, ears and the face outline filled with skin."""
    skin = p["skin"]
    neck = [[CENTRE_X - p["neck_w"], 80], [CENTRE_X + p["neck_w"], 80],
            [CENTRE_X + p["neck_w"] + 4, 140], [CENTRE_X - p["neck_w"] - 4, 140]]
    canvas.fill(neck, shade(skin, 0.8))
    ear_x = float(face_half_width(p, p["ear_y"])) + 0.3 * p["ear_rx"]
    for side in (-1, 1):
        centre = (CENTRE_X + side * ear_x, p["ear_y"])
        canvas.ellipse(centre, (p["ear_rx"], p["ear_ry"]), side * 8, shade(skin, 0.92))
        canvas.ellipse((centre[0] + side * 0.8, centre[1]), (0.45 * p["ear_rx"], 0.6 * p["ear_ry"]), side * 8,
                       shade(skin, 0.72))
    left, right = _outline(p, p["crown_y"], p["chin_y"], steps=40)
    canvas.fill(np.concatenate([left, right]), skin)
    if p["chin_cleft"]:
        canvas.line([[CENTRE_X, p["chin_y"] - 5.5], [CENTRE_X, p["chin_y"] - 2.5]], shade(skin, 0.78), 0.8)


def draw_front_hair(canvas, p):
    """Hair over the head: the cap above the hairline and down the sides to ``hair_side_len``."""
    width = p["face_w_temple"] + p["hair_volume"]
    top = p["crown_y"] - p["hair_volume"]
    arc = np.linspace(np.pi, 0, 17)
    cap = np.stack([CENTRE_X + width * np.cos(arc), TEMPLE_Y - (TEMPLE_Y - top) * np.sin(arc)], 1)
    side_end = p["hair_side_len"]
    outer_w = max(width, p["face_w_cheek"] + p["hair_volume"] + 2) if side_end > SIDE_HAIR_Y else width
    x = np.linspace(-1, 1, 21)
    hairline_y = (p["hairline_y"] + p["hairline_slope"] * x + p["hairline_curve"] * x ** 2
                  + p["fringe_wave"] * np.sin(p["fringe_freq"] * x * np.pi + p["fringe_phase"]))
    # the hairline stays inside the head outline, however high it sits
    hairline_x = x * np.minimum(p["face_w_temple"], face_half_width(p, hairline_y)) - p["sideburn"] * x
    hairline = np.stack([CENTRE_X + hairline_x, hairline_y], 1)[::-1]
    left_in = _outline(p, max(hairline_y[0], TEMPLE_Y - 6), side_end, inset=p["sideburn"], steps=12)[0]
    right_in = _outline(p, max(hairline_y[-1], TEMPLE_Y - 6), side_end, inset=p["sideburn"], steps=12)[1]
    polygon = np.concatenate([[[CENTRE_X - outer_w, side_end]], cap, [[CENTRE_X + outer_w, side_end]],
                              right_in, hairline, left_in])
    canvas.fill(polygon, p["hair_colour"])


def _eye_curves(p, state, side):
    """Returns (upper lid [K, 2], lower lid [K, 2], centre (2,)) of the eye on ``side`` (-1 left, +1 right)."""
    centre = ARCFACE_TEMPLATE[0 if side < 0 else 1] + np.array([side * p["eye_spread"], p["eye_dy"]])
    t = np.linspace(-1, 1, 13)
    bump = (1 - t ** 2) ** 0.8
    skew = 1 + p["eye_skew"] * t * side
    openness = state["eye_open"]
    upper = np.stack([t * p["eye_w"], -p["eye_h_up"] * openness * bump * skew], 1)
    lower = np.stack([t * p["eye_w"], p["eye_h_lo"] * openness * bump], 1)
    angle = np.deg2rad(p["eye_slant"]) * -side
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return upper @ rot.T + centre, lower @ rot.T + centre, centre


def draw_eyes(canvas, p, state):
    """Both eyes (sclera, iris, pupil, lids, crease); returns the eye centres [2, 2]."""
    centres = []
    lid = mix(p["skin"], (20, 14, 12), p["lid_dark"])
    for side in (-1, 1):
        upper, lower, centre = _eye_curves(p, state, side)
        canvas.fill(np.concatenate([upper, lower[::-1]]), SCLERA)
        iris_c = centre + state["gaze"]
        canvas.ellipse(iris_c, (p["iris_r"], p["iris_r"]), 0, p["iris_colour"])
        canvas.ellipse(iris_c, (0.45 * p["iris_r"], 0.45 * p["iris_r"]), 0, (18, 14, 14))
        canvas.ellipse(iris_c + [-0.3 * p["iris_r"], -0.35 * p["iris_r"]], (0.3, 0.3), 0, (250, 250, 250))
        lift = np.array([0.0, -8.0])
        canvas.fill(np.concatenate([upper, (upper * [1.2, 1] + [-0.2 * centre[0], 0] + lift)[::-1]]), p["skin"])
        canvas.fill(np.concatenate([lower, (lower * [1.2, 1] + [-0.2 * centre[0], 0] - lift)[::-1]]), p["skin"])
        if p["eye_crease"] > 0:
            canvas.line(upper[2:-2] + [0, -p["eye_crease"]], shade(p["skin"], 0.82), 0.6)
        canvas.line(upper, lid, p["lid_thick"])
        canvas.line(lower[3:-3], shade(p["skin"], 0.85), 0.5)
        centres.append(centre)
    return np.array(centres)


def draw_brows(canvas, p, state):
    """Both eyebrows as tapered arcs."""
    u = np.linspace(0, 1, 9)
    for side in (-1, 1):
        eye_y = ARCFACE_TEMPLATE[0 if side < 0 else 1][1] + p["eye_dy"]
        x = CENTRE_X + side * (p["brow_inner"] + u * p["brow_len"])
        y = (eye_y - p["brow_gap"] - state["brow_raise"] - u * p["brow_len"] * np.tan(np.deg2rad(p["brow_angle"]))
             - p["brow_arch"] * (1 - ((u - 0.6) / 0.6) ** 2))
        half = p["brow_thick"] * (1 - 0.55 * u) / 2
        canvas.fill(np.concatenate([np.stack([x, y - half], 1), np.stack([x, y + half], 1)[::-1]]),
                    p["brow_colour"])


def draw_nose(canvas, p):
    """Nose bridge shading, tip, alae and nostrils; returns the nose tip (2,)."""
    skin = p["skin"]
    tip = np.array([CENTRE_X + p["nose_dx"], ARCFACE_TEMPLATE[2][1] + p["nose_dy"]])
    w = p["nose_w"]
    canvas.ellipse(tip + [0, 3.2], (w * 0.7, 1.6), 0, shade(skin, 0.86))
    for side in (-1, 1):
        bridge = [[CENTRE_X + side * 3.2, p["nose_top"]], [tip[0] + side * w * 0.5, tip[1] - 3]]
        canvas.line(bridge, shade(skin, 1 - p["bridge_dark"]), 0.7)
        canvas.ellipse(tip + [side * w * 0.62, 0.3], (w * 0.38, w * 0.3), 0, shade(skin, 0.95))
    canvas.ellipse(tip, (p["nose_tip_r"], p["nose_tip_r"] * 0.85), 0, shade(skin, 1.05))
    for side in (-1, 1):
        ala = np.stack([tip[0] + side * w * np.array([1.0, 1.02, 0.9, 0.65]),
                        tip[1] + np.array([-2.0, 0.0, 1.6, 2.4])], 1)
        canvas.line(ala, shade(skin, 0.7), 0.7)
        canvas.ellipse(tip + [side * w * 0.42, 1.7], (p["nostril_rx"], p["nostril_ry"]), side * 15,
                       shade(skin, 0.38))
    return tip


def mouth_corners(p, state):
    """Returns the mouth corners [2, 2] of identity ``p`` with the image's expression ``state``."""
    centre = (ARCFACE_TEMPLATE[3] + ARCFACE_TEMPLATE[4]) / 2 + [0.0, p["mouth_dy"]]
    smile = state["smile"]
    half = p["mouth_hw"] + 1.0 * smile
    return np.array([centre + [-half, -2.5 * smile], centre + [half, -2.5 * smile]])


def draw_mouth(canvas, p, state):
    """Lips (cupid's bow, thickness), opening with teeth; returns the mouth corners [2, 2]."""
    corners = mouth_corners(p, state)
    t = np.linspace(-1, 1, 17)
    bump = 1 - t ** 2
    x = (corners[0, 0] + corners[1, 0]) / 2 + t * (corners[1, 0] - corners[0, 0]) / 2
    line = corners[0, 1] + (corners[1, 1] - corners[0, 1]) * (t + 1) / 2 + 2.5 * state["smile"] * bump
    opening = state["open"] * p["mouth_open_max"]
    upper_edge = line - 0.25 * opening * bump
    lower_edge = line + opening * bump
    bow = 1 - p["cupid"] * np.exp(-(t / 0.14) ** 2) + 0.25 * p["cupid"] * np.exp(-((np.abs(t) - 0.3) / 0.15) ** 2)
    upper_top = upper_edge - p["lip_up"] * np.sqrt(bump) * bow
    lower_bottom = lower_edge + p["lip_lo"] * np.sqrt(bump)
    canvas.fill(np.concatenate([np.stack([x, upper_top], 1), np.stack([x, upper_edge], 1)[::-1]]),
                shade(p["lip_colour"], 0.92))
    canvas.fill(np.concatenate([np.stack([x, lower_edge], 1), np.stack([x, lower_bottom], 1)[::-1]]),
                p["lip_colour"])
    if opening > 0.8:
        inside = np.concatenate([np.stack([x, upper_edge], 1), np.stack([x, lower_edge], 1)[::-1]])
        canvas.fill(inside, MOUTH_INSIDE)
        teeth = np.concatenate([np.stack([x[3:-3], upper_edge[3:-3]], 1),
                                np.stack([x[3:-3], (upper_edge + 0.35 * opening * bump)[3:-3]], 1)[::-1]])
        canvas.fill(teeth, TEETH)
    canvas.line(np.stack([x, line], 1), shade(p["lip_colour"], 0.45), 0.6)
    return corners


def draw_folds(canvas, p, tip, corners):
    """Nasolabial folds from the nose wings towards the mouth corners."""
    if p["fold_dark"] <= 0:
        return
    colour = shade(p["skin"], 1 - p["fold_dark"])
    for side, corner in zip((-1, 1), corners):
        start = tip + [side * (p["nose_w"] + 2.0), 0.5]
        end = corner + [side * 3.0, 2.0]
        mid = (start + end) / 2 + [side * 2.0, 0]
        canvas.line(np.array([start, mid, end]), colour, 0.6)


def draw_beard(canvas, p, tip, rng):
    """Stubble, goatee or full beard (semi-transparent, textured) and a moustache, in the hair colour."""
    colour = p["beard_colour"]
    kind = p["beard"]
    if kind in ("stubble", "full"):
        left, right = _outline(p, p["beard_top"], p["chin_y"], inset=0.3, steps=16)
        cheek = float(face_half_width(p, p["beard_top"])) * 0.85
        upper = [[CENTRE_X + cheek, p["beard_top"]], [CENTRE_X + p["mouth_hw"] + 4, 85],
                 [CENTRE_X + 5, tip[1] + 4], [CENTRE_X - 5, tip[1] + 4],
                 [CENTRE_X - p["mouth_hw"] - 4, 85], [CENTRE_X - cheek, p["beard_top"]]]
        canvas.blend(np.concatenate([left, right, upper]), colour, p["beard_alpha"], rng, soften=1.0)
    elif kind == "goatee":
        w = p["mouth_hw"] * 0.7
        goatee = [[CENTRE_X - w, 96], [CENTRE_X + w, 96], [CENTRE_X + w * 0.8, p["chin_y"] - 1],
                  [CENTRE_X, p["chin_y"] + 0.5], [CENTRE_X - w * 0.8, p["chin_y"] - 1]]
        canvas.blend(goatee, colour, p["beard_alpha"], rng, soften=0.8)
    if p["moustache"] > 0:
        w = p["mouth_hw"] + 1.5
        top = tip[1] + 3.5
        bottom = ARCFACE_TEMPLATE[3][1] + p["mouth_dy"] - p["lip_up"] - 0.3
        moustache = [[CENTRE_X - w, bottom + 1.5], [CENTRE_X - 4, top], [CENTRE_X + 4, top],
                     [CENTRE_X + w, bottom + 1.5], [CENTRE_X, bottom]]
        canvas.blend(moustache, colour, p["moustache"], rng, soften=0.5)


def draw_moles(canvas, p):
    """Small dark moles at identity-fixed positions."""
    for x, y, r in p["moles"]:
        canvas.ellipse((x, y), (r, r), 0, mix(p["skin"], (60, 38, 30), 0.75))
