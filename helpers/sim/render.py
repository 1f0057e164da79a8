"""The simulated world's drawing: table tops and the fruit (and distractors) on them (numpy + OpenCV).

`background()` paints a table (wood, cloth or painted noise); `make_sprite()` draws one object
upright at its base size, with an alpha mask. `helpers.sim.scenes` places, moves and lights them.
Sizes are fractions of the frame's shorter side, so a 96 px and a 320 px camera see the same
scene composition.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

OBJECT_CLASSES = ("apple", "banana")
DISTRACTOR_CLASSES = ("orange", "lemon", "ball")
ALL_CLASSES = OBJECT_CLASSES + DISTRACTOR_CLASSES

# Sizes are fractions of the frame's shorter side, so a 96 px and a 320 px camera see the
# same scene composition.
_APPLE_DIAMETER = (0.12, 0.28)
_BANANA_LENGTH = (0.28, 0.50)
_ORANGE_DIAMETER = (0.13, 0.28)
_LEMON_LENGTH = (0.14, 0.24)
_BALL_DIAMETER = (0.10, 0.24)



def _rgb(h_deg: float, s: float, v: float) -> np.ndarray:
    """HSV (hue in degrees) to an RGB float32 triple in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb((h_deg % 360) / 360.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: random values on a coarse grid, upsampled bicubically."""
    gh, gw = max(2, int(cells * h / max(h, w)) + 2), max(2, int(cells * w / max(h, w)) + 2)
    grid = rng.uniform(-1, 1, (gh, gw, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    out = out.reshape(h, w, channels) if channels > 1 else out.reshape(h, w)
    return np.clip(out, -1, 1)


# --------------------------------------------------------------------------- backgrounds
def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A table top as float32 RGB in [0, 1]: wood, cloth, painted noise or plain with vignette."""
    kind = rng.choice(["wood", "cloth", "noise", "plain"], p=[0.3, 0.25, 0.3, 0.15])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "wood":
        base = _rgb(rng.uniform(20, 38), rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.8))
        angle = rng.uniform(0, math.pi)
        u = xx * math.cos(angle) + yy * math.sin(angle)
        warp = _smooth_noise(rng, h, w, 4) * rng.uniform(8, 25)
        freq = rng.uniform(0.05, 0.16)
        grain = 0.5 + 0.5 * np.sin((u + warp) * freq)
        fine = _smooth_noise(rng, h, w, max(h, w) // 3) * 0.06
        shade = 0.78 + 0.22 * grain + fine
        img = base[None, None, :] * shade[..., None]
    elif kind == "cloth":
        c1 = _rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.6), rng.uniform(0.45, 0.95))
        c2 = c1 * rng.uniform(0.6, 0.9)
        period = rng.uniform(10, 40)
        pattern = rng.choice(["gingham", "stripes", "plain"])
        if pattern == "gingham":
            a = ((xx // period) % 2 == 0).astype(np.float32)
            b = ((yy // period) % 2 == 0).astype(np.float32)
            t = (a + b) / 2.0
        elif pattern == "stripes":
            t = ((xx + yy * rng.uniform(-1, 1)) // period % 2).astype(np.float32)
        else:
            t = np.zeros((h, w), np.float32)
        img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
        weave = (np.sin(xx * 1.7) * np.sin(yy * 1.7)) * 0.03
        img = img * (1 + weave[..., None] + _smooth_noise(rng, h, w, 6)[..., None] * 0.05)
    elif kind == "noise":
        c1 = _rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.5), rng.uniform(0.3, 0.9))
        c2 = _rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.5), rng.uniform(0.3, 0.9))
        t = (_smooth_noise(rng, h, w, int(rng.integers(2, 8))) + 1) / 2
        img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
        img = img * (1 + _smooth_noise(rng, h, w, max(h, w) // 4)[..., None] * 0.05)
    else:
        c = _rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.4, 0.95))
        r = np.sqrt(((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
        img = c[None, None, :] * (1 - 0.5 * r[..., None] ** 2)
    return np.clip(img, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- sprites
@dataclass
class Sprite:
    """An object drawn once, upright, at its base size: colour, alpha and the class name."""

    kind: str
    rgb: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    area: float  # pixels with alpha > 0.5 at scale 1


def _sphere_shading(h: int, w: int, cx: float, cy: float, rx: float, ry: float, light: np.ndarray):
    """Per-pixel (diffuse, specular, inside-mask) of an ellipsoid lit from `light`."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    nx, ny = (xx - cx) / rx, (yy - cy) / ry
    rr = nx**2 + ny**2
    inside = rr <= 1.0
    nz = np.sqrt(np.clip(1 - rr, 0, 1))
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    half = light + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    spec = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0, 1)
    return diffuse, spec, inside, nx, ny


def _light_dir(rng: np.random.Generator) -> np.ndarray:
    az = rng.uniform(0, 2 * math.pi)
    el = rng.uniform(0.5, 1.2)
    v = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)], np.float32)
    return v / np.linalg.norm(v)


def _soft_alpha(mask: np.ndarray) -> np.ndarray:
    """Anti-aliased alpha from a boolean mask (a light blur of the edge)."""
    return cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0.7)


def _apple(rng: np.random.Generator, diameter: float) -> Sprite:
    r = diameter / 2
    pad = int(r * 0.6) + 4
    size = int(2 * r) + 2 * pad
    cx = cy = size / 2
    rx, ry = r * rng.uniform(1.0, 1.08), r * rng.uniform(0.9, 1.0)
    light = _light_dir(rng)
    diffuse, spec, inside, nx, ny = _sphere_shading(size, size, cx, cy + r * 0.05, rx, ry, light)
    # A dimple at the top where the stem sits: carve a small notch out of the outline.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    notch = ((xx - cx) ** 2 / (r * 0.28) ** 2 + (yy - (cy - ry * 1.02)) ** 2 / (r * 0.16) ** 2) <= 1
    inside &= ~notch
    # Varieties: red (most), red-yellow blush, green, golden. Golden/green apples are why an
    # apple-only model is tempted by yellow fruit later in the story.
    variety = rng.choice(["red", "blush", "green", "golden"], p=[0.35, 0.15, 0.2, 0.3])
    if variety == "red":
        base = _rgb(rng.uniform(-8, 8), rng.uniform(0.7, 0.95), rng.uniform(0.55, 0.85))
        second = _rgb(rng.uniform(-5, 15), rng.uniform(0.6, 0.9), rng.uniform(0.35, 0.6))
    elif variety == "blush":
        base = _rgb(rng.uniform(-5, 10), rng.uniform(0.65, 0.9), rng.uniform(0.65, 0.9))
        second = _rgb(rng.uniform(40, 55), rng.uniform(0.6, 0.85), rng.uniform(0.7, 0.9))
    elif variety == "green":
        base = _rgb(rng.uniform(75, 100), rng.uniform(0.55, 0.8), rng.uniform(0.55, 0.85))
        second = _rgb(rng.uniform(60, 80), rng.uniform(0.5, 0.75), rng.uniform(0.6, 0.85))
    else:
        # Golden Delicious: banana-yellow skin, a faint warm blush.
        base = _rgb(rng.uniform(46, 58), rng.uniform(0.65, 0.88), rng.uniform(0.78, 0.95))
        second = _rgb(rng.uniform(35, 50), rng.uniform(0.6, 0.85), rng.uniform(0.7, 0.9))
    # Vertical streaks (apple skin) mixing the two colours.
    angle = np.arctan2(nx, -ny)
    streak = (np.sin(angle * rng.integers(5, 11) + rng.uniform(0, 6)) + 1) / 2
    blotch = (_smooth_noise(rng, size, size, 5) + 1) / 2
    t = np.clip(0.6 * blotch + 0.4 * streak * rng.uniform(0.3, 1.0), 0, 1)[..., None]
    color = base * (1 - t) + second * t
    shade = (0.35 + 0.75 * diffuse)[..., None]
    rgb = color * shade + (spec ** rng.uniform(25, 60))[..., None] * rng.uniform(0.35, 0.8)
    # Stem: a short brown stroke out of the dimple.
    stem_col = tuple(float(c) for c in _rgb(rng.uniform(20, 35), 0.6, rng.uniform(0.2, 0.4)))
    x0, y0 = cx, cy - ry * 0.85
    ang = rng.uniform(-0.6, 0.6)
    x1, y1 = x0 + math.sin(ang) * r * 0.4, y0 - math.cos(ang) * r * 0.4
    stem_mask = np.zeros((size, size), np.uint8)
    thick = max(1, int(round(r * 0.09)))
    cv2.line(stem_mask, (int(x0), int(y0)), (int(x1), int(y1)), 1, thick, cv2.LINE_AA)
    stem = stem_mask.astype(bool)
    rgb[stem] = stem_col
    if rng.random() < 0.35:  # a leaf beside the stem
        leaf_mask = np.zeros((size, size), np.uint8)
        lx, ly = int(x0 + rng.choice([-1, 1]) * r * 0.3), int(y0 - r * 0.1)
        cv2.ellipse(leaf_mask, (lx, ly), (max(2, int(r * 0.32)), max(1, int(r * 0.13))),
                    float(rng.uniform(-40, 40)), 0, 360, 1, -1)
        leaf = leaf_mask.astype(bool)
        rgb[leaf] = _rgb(rng.uniform(90, 130), 0.7, rng.uniform(0.35, 0.6))
        stem |= leaf
    mask = inside | stem
    return Sprite("apple", np.clip(rgb, 0, 1).astype(np.float32), _soft_alpha(mask), float(mask.sum()))


def _one_banana(rng: np.random.Generator, length: float, size: int, origin: tuple[float, float],
                direction: float, curve: float, color: np.ndarray, light_side: float):
    """Draw one banana into (rgb, mask) arrays; returns (rgb, mask) of just this banana."""
    # Centre line: an arc starting at `origin` (the stem end) heading along `direction`.
    n = 48
    thick = length * rng.uniform(0.16, 0.22)
    ts = np.linspace(0, 1, n)
    ang = direction + curve * (ts - 0.5)
    step = length / (n - 1)
    xs = origin[0] + np.concatenate([[0], np.cumsum(np.cos(ang[:-1]) * step)])
    ys = origin[1] + np.concatenate([[0], np.cumsum(np.sin(ang[:-1]) * step)])
    # Width profile: thin stem, full body, blunt dark tip.
    prof = np.clip(np.sin(np.pi * np.clip(ts * 1.05, 0, 1)) ** 0.6, 0.12, 1) * thick / 2
    prof[:4] = thick * 0.09
    nxs, nys = -np.sin(ang), np.cos(ang)
    left = np.stack([xs + nxs * prof, ys + nys * prof], 1)
    right = np.stack([xs - nxs * prof, ys - nys * prof], 1)
    poly = np.concatenate([left, right[::-1]]).astype(np.float32)
    mask_u8 = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask_u8, [np.round(poly * 4).astype(np.int32)], 1, cv2.LINE_AA, shift=2)
    mask = mask_u8.astype(bool)
    # Shading across the width: distance to the centre line gives a cylinder-like falloff,
    # the sign gives which side faces the light. Computed only inside the banana's bounding
    # rectangle: the sprite is mostly empty and this is the slow part of rendering.
    bx, by, bw, bh = cv2.boundingRect(mask_u8)
    rgb_full = np.zeros((size, size, 3), np.float32)
    if bw == 0 or bh == 0:
        return rgb_full, mask
    yy, xx = np.mgrid[by:by + bh, bx:bx + bw].astype(np.float32)
    pts = np.stack([xs, ys], 1).astype(np.float32)
    d = np.full((bh, bw), np.inf, np.float32)
    idx = np.zeros((bh, bw), np.int32)
    for i, (px, py) in enumerate(pts[::2]):
        dd = (xx - px) ** 2 + (yy - py) ** 2
        better = dd < d
        d = np.where(better, dd, d)
        idx = np.where(better, i * 2, idx)
    nxm, nym = nxs[idx], nys[idx]
    side = ((xx - xs[idx]) * nxm + (yy - ys[idx]) * nym) / np.maximum(prof[idx], 1e-3)
    u = np.clip(side, -1, 1)
    shade = 0.55 + 0.45 * np.sqrt(np.clip(1 - u**2, 0, 1)) + 0.18 * u * light_side
    # Facets (bananas are pentagonal in section): faint ridges along the length.
    shade += 0.05 * np.cos(u * 5.0)
    rgb = color[None, None, :] * shade[..., None]
    # Brown speckles and darker ends.
    speck = _smooth_noise(rng, bh, bw, max(8, int(length / 5)))
    rgb *= (1 - 0.25 * (speck > 0.75))[..., None]
    tpos = idx.astype(np.float32) / (n - 1)
    brown = _rgb(rng.uniform(20, 35), 0.6, 0.3)
    end_w = np.clip((tpos - 0.93) / 0.07, 0, 1) + np.clip((0.08 - tpos) / 0.08, 0, 1) * 0.8
    rgb = rgb * (1 - end_w[..., None]) + brown[None, None, :] * end_w[..., None]
    rgb_full[by:by + bh, bx:bx + bw] = rgb
    return rgb_full, mask


def _banana(rng: np.random.Generator, length: float) -> Sprite:
    bunch = int(rng.choice([1, 1, 1, 2, 3, 4], p=[0.4, 0.15, 0.1, 0.15, 0.12, 0.08]))
    size = int(length * 1.5) + 8
    rgb = np.zeros((size, size, 3), np.float32)
    mask = np.zeros((size, size), bool)
    ripeness = rng.choice(["yellow", "green-yellow", "ripe"], p=[0.6, 0.2, 0.2])
    if ripeness == "yellow":
        color = _rgb(rng.uniform(48, 56), rng.uniform(0.7, 0.9), rng.uniform(0.82, 0.97))
    elif ripeness == "green-yellow":
        color = _rgb(rng.uniform(58, 72), rng.uniform(0.65, 0.85), rng.uniform(0.75, 0.9))
    else:
        color = _rgb(rng.uniform(42, 50), rng.uniform(0.75, 0.95), rng.uniform(0.75, 0.9))
    direction = rng.uniform(-0.3, 0.3)
    curve = rng.uniform(0.6, 1.3) * rng.choice([-1, 1])
    origin = (size * 0.5 - math.cos(direction) * length * 0.48, size * 0.5 - math.sin(direction) * length * 0.4)
    light_side = rng.uniform(-1, 1)
    # Bunches share the stem end and fan out; draw back to front so the front one overlaps.
    for k in range(bunch):
        fan = (k - (bunch - 1) / 2) * rng.uniform(0.12, 0.22)
        l_k = length * rng.uniform(0.88, 1.0)
        c_k = np.clip(color * rng.uniform(0.92, 1.05), 0, 1)
        b_rgb, b_mask = _one_banana(rng, l_k, size, origin, direction + fan, curve, c_k, light_side)
        rgb[b_mask] = b_rgb[b_mask]
        if k > 0:  # a thin dark seam between overlapping fingers reads as separate bananas
            edge = cv2.morphologyEx(b_mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
            rgb[edge & mask] *= 0.7
        mask |= b_mask
    # Crop the sprite to the drawn pixels (plus a pad) so rotations stay cheap.
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, ys.min() - 4), min(size, ys.max() + 5)
    x0, x1 = max(0, xs.min() - 4), min(size, xs.max() + 5)
    mask = mask[y0:y1, x0:x1]
    return Sprite("banana", np.clip(rgb[y0:y1, x0:x1], 0, 1), _soft_alpha(mask), float(mask.sum()))


def _orange(rng: np.random.Generator, diameter: float) -> Sprite:
    r = diameter / 2
    pad = 4
    size = int(2 * r) + 2 * pad
    c = size / 2
    light = _light_dir(rng)
    diffuse, spec, inside, nx, ny = _sphere_shading(size, size, c, c, r, r * rng.uniform(0.95, 1.0), light)
    color = _rgb(rng.uniform(24, 34), rng.uniform(0.85, 1.0), rng.uniform(0.85, 0.98))
    # Dimpled peel: fine noise on the shading instead of apple streaks.
    dimples = _smooth_noise(rng, size, size, max(6, int(r / 1.2))) * 0.12
    rgb = color * (0.35 + 0.7 * diffuse + dimples)[..., None] + (spec**15)[..., None] * 0.25
    navel = ((nx - 0.1) ** 2 + (ny + 0.1) ** 2) < 0.006
    rgb[navel & inside] = _rgb(rng.uniform(40, 90), 0.5, 0.35)
    return Sprite("orange", np.clip(rgb, 0, 1).astype(np.float32), _soft_alpha(inside), float(inside.sum()))


def _lemon(rng: np.random.Generator, length: float) -> Sprite:
    a, b = length / 2, length / 2 * rng.uniform(0.62, 0.75)
    size = int(2 * a) + 10
    c = size / 2
    light = _light_dir(rng)
    diffuse, spec, inside, nx, ny = _sphere_shading(size, size, c, c, a * 0.9, b, light)
    # Pointed ends: two small cones on the long axis.
    tips = np.zeros((size, size), np.uint8)
    for sgn in (-1, 1):
        pts = np.array([[c + sgn * a * 0.85, c - b * 0.3], [c + sgn * a, c], [c + sgn * a * 0.85, c + b * 0.3]], np.int32)
        cv2.fillConvexPoly(tips, pts, 1)
    mask = inside | tips.astype(bool)
    color = _rgb(rng.uniform(50, 60), rng.uniform(0.75, 0.95), rng.uniform(0.85, 0.98))
    rgb = color * (0.4 + 0.65 * np.where(inside, diffuse, 0.6))[..., None] + (spec**20)[..., None] * 0.3
    return Sprite("lemon", np.clip(rgb, 0, 1).astype(np.float32), _soft_alpha(mask), float(mask.sum()))


def _ball(rng: np.random.Generator, diameter: float) -> Sprite:
    r = diameter / 2
    size = int(2 * r) + 8
    c = size / 2
    light = _light_dir(rng)
    diffuse, spec, inside, nx, ny = _sphere_shading(size, size, c, c, r, r, light)
    # Blue, purple, white, cyan or pink: colours no fruit in the story has.
    hue = float(rng.choice([220, 270, 190, 330, 0]))
    sat = 0.0 if hue == 0 else rng.uniform(0.5, 0.9)
    color = _rgb(hue, sat, rng.uniform(0.7, 0.95))
    rgb = color * (0.3 + 0.75 * diffuse)[..., None] + (spec**40)[..., None] * 0.6
    seam = np.abs(nx * 0.8 + ny * 0.6 + 0.1 * np.sin(ny * 6)) < 0.04
    rgb[seam & inside] *= 0.5
    return Sprite("ball", np.clip(rgb, 0, 1).astype(np.float32), _soft_alpha(inside), float(inside.sum()))


def make_sprite(rng: np.random.Generator, kind: str, side: float) -> Sprite:
    """A new `kind` object (one of ALL_CLASSES) sized for a frame whose shorter side is `side` pixels."""
    if kind == "apple":
        return _apple(rng, side * rng.uniform(*_APPLE_DIAMETER))
    if kind == "banana":
        return _banana(rng, side * rng.uniform(*_BANANA_LENGTH))
    if kind == "orange":
        return _orange(rng, side * rng.uniform(*_ORANGE_DIAMETER))
    if kind == "lemon":
        return _lemon(rng, side * rng.uniform(*_LEMON_LENGTH))
    if kind == "ball":
        return _ball(rng, side * rng.uniform(*_BALL_DIAMETER))
    raise ValueError(f"unknown object {kind!r}; valid: {', '.join(ALL_CLASSES)}")
