"""The simulated world: a camera looking at fruit on a table (numpy + OpenCV only).

`SceneStream` is one camera: a table top (wood, cloth or painted noise), lighting, and the
objects placed on it. Each `next_frame()` moves everything a little, as a hand-held or
loosely mounted camera and a busy table would, so consecutive frames can be tracked.
`render_dataset()` draws independent scenes for training sets and benchmarks.

Ground truth is returned only for the *object* classes (`apple`, `banana`); distractors
(`orange`, `lemon`, `ball`) are drawn but never labeled, like things on the table the studio
has no label for. Boxes are tight around the rendered pixels (alpha > 0.5), in pixels,
top-left origin (`helpers.geometry.BBox`).

Everything is deterministic for a given seed: the same seed, scene and call sequence give
byte-identical frames on a given OpenCV build.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from helpers.geometry import BBox
from helpers.sim.render import ALL_CLASSES, DISTRACTOR_CLASSES, OBJECT_CLASSES, Sprite, background, make_sprite

# Per-frame motion (fractions of the shorter side): slow enough for template tracking,
# enough that a few dozen frames cover the table.
_OBJECT_STEP = 0.006
_CAMERA_STEP = 0.004
_MARGIN = 0.08  # background margin around the frame for camera drift


# --------------------------------------------------------------------------- the scene
@dataclass
class _Placed:
    sprite: Sprite
    labeled: bool
    x: float  # centre in background coordinates
    y: float
    angle: float  # degrees
    scale: float
    vx: float = 0.0
    vy: float = 0.0
    vangle: float = 0.0

    @property
    def radius(self) -> float:
        h, w = self.sprite.alpha.shape
        return 0.5 * math.hypot(h, w) * self.scale * 0.75


class SceneStream:
    """One simulated camera looking at a table with `objects` and `distractors` on it.

    Args:
        objects: labeled classes to place (`apple`, `banana`); may repeat or be empty.
        distractors: unlabeled things to place (`orange`, `lemon`, `ball`); may repeat.
        size: frame size as (width, height) in pixels.
        seed: everything (table, lighting, fruit, motion) follows from it.

    Example:
        >>> cam = SceneStream(["apple", "apple"], ["orange"], seed=3)
        >>> rgb, boxes = cam.next_frame()
    """

    def __init__(self, objects: Sequence[str], distractors: Sequence[str] = (),
                 size: tuple[int, int] = (320, 320), seed: int = 0):
        if len(size) != 2 or min(size) < 32:
            raise ValueError(f"size must be (width, height) of at least 32 px, got {size!r}")
        self.width, self.height = int(size[0]), int(size[1])
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._side = float(min(self.width, self.height))
        m = int(round(_MARGIN * self._side))
        self._margin = m
        self._bg = background(self._rng, self.height + 2 * m, self.width + 2 * m)
        self._new_lighting()
        self._cam = np.zeros(2, np.float32)  # camera offset within the margin
        self._cam_v = np.zeros(2, np.float32)
        self.frame_index = 0
        self._placed: list[_Placed] = []
        self.set_scene(objects, distractors)

    # -- scene control
    def move_camera(self) -> None:
        """Carry the camera to another table: new background, lighting and framing.

        The objects in view stay (call `set_scene` or `rearrange` for new ones).
        """
        m = self._margin
        self._bg = background(self._rng, self.height + 2 * m, self.width + 2 * m)
        self._new_lighting()
        self._cam = np.zeros(2, np.float32)
        self._cam_v = np.zeros(2, np.float32)

    def set_scene(self, objects: Sequence[str], distractors: Sequence[str] = ()) -> None:
        """Put a new set of things on the same table (the background and camera stay)."""
        for name in list(objects):
            if name not in OBJECT_CLASSES:
                raise ValueError(f"unknown object {name!r}; objects are {', '.join(OBJECT_CLASSES)}"
                                 f" (distractors go in `distractors`: {', '.join(DISTRACTOR_CLASSES)})")
        for name in list(distractors):
            if name not in ALL_CLASSES:
                raise ValueError(f"unknown distractor {name!r}; valid: {', '.join(DISTRACTOR_CLASSES)}")
        self.objects = list(objects)
        self.distractors = list(distractors)
        sprites = [(make_sprite(self._rng, k, self._side), True) for k in self.objects]
        sprites += [(make_sprite(self._rng, k, self._side), False) for k in self.distractors]
        self._placed = [_Placed(s, lab, 0, 0, 0, 1) for s, lab in sprites]
        self.rearrange()

    def rearrange(self) -> None:
        """Move everything to new places (someone tidied the table); keeps the same fruit."""
        m = self._margin
        placed: list[_Placed] = []
        # Larger things first so small ones fill the gaps; z-order is shuffled afterwards.
        order = sorted(range(len(self._placed)), key=lambda i: -self._placed[i].sprite.area)
        for i in order:
            p = self._placed[i]
            p.scale = float(self._rng.uniform(0.9, 1.1))
            p.angle = float(self._rng.uniform(-180, 180) if p.sprite.kind != "apple" else self._rng.uniform(-35, 35))
            p.vangle = float(self._rng.normal(0, 0.6))
            r = p.radius
            best, best_overlap = None, math.inf
            for _ in range(40):
                x = self._rng.uniform(m + r * 0.8, m + self.width - r * 0.8) if self.width > 2 * r else m + self.width / 2
                y = self._rng.uniform(m + r * 0.8, m + self.height - r * 0.8) if self.height > 2 * r else m + self.height / 2
                overlap = max([0.0] + [(q.radius + r) - math.hypot(x - q.x, y - q.y) for q in placed])
                if overlap < best_overlap:
                    best, best_overlap = (x, y), overlap
                if overlap <= 0:
                    break
            p.x, p.y = best
            step = _OBJECT_STEP * self._side
            p.vx, p.vy = (float(v) for v in self._rng.normal(0, step, 2))
            placed.append(p)
        self._rng.shuffle(self._placed)

    def _new_lighting(self) -> None:
        self._gain = float(self._rng.uniform(0.65, 1.25))
        tint = self._rng.uniform(-0.08, 0.08, 3).astype(np.float32)
        self._tint = 1 + tint - tint.mean()
        # A broad illumination gradient (window light) fixed per camera.
        h, w = self.height, self.width
        ang = self._rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        g = ((xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang)) / max(h, w)
        self._illum = (1 + g * self._rng.uniform(0.0, 0.5)).astype(np.float32)
        self._blur = float(self._rng.choice([0.0, 0.0, 0.6, 1.0, 1.6]))
        self._noise = float(self._rng.uniform(1.0, 6.0))

    # -- motion
    def _step(self) -> None:
        """Advance one frame: a random-walk camera jitter and slow drift of every object."""
        rng = self._rng
        side = self._side
        cstep = _CAMERA_STEP * side
        self._cam_v = 0.7 * self._cam_v + rng.normal(0, cstep, 2).astype(np.float32)
        self._cam = np.clip(self._cam + self._cam_v, -self._margin, self._margin)
        m = self._margin
        for p in self._placed:
            ostep = _OBJECT_STEP * side
            p.vx = 0.85 * p.vx + float(rng.normal(0, ostep * 0.5))
            p.vy = 0.85 * p.vy + float(rng.normal(0, ostep * 0.5))
            p.x += p.vx
            p.y += p.vy
            r = p.radius * 0.6
            # Bounce off the frame edges so objects stay mostly in view.
            if p.x < m + r or p.x > m + self.width - r:
                p.vx = -p.vx
                p.x = float(np.clip(p.x, m + r, m + self.width - r))
            if p.y < m + r or p.y > m + self.height - r:
                p.vy = -p.vy
                p.y = float(np.clip(p.y, m + r, m + self.height - r))
            p.vangle = 0.8 * p.vangle + float(rng.normal(0, 0.4))
            p.angle += p.vangle
            p.scale = float(np.clip(p.scale * (1 + rng.normal(0, 0.004)), 0.85, 1.15))
        self._gain = float(np.clip(self._gain * (1 + rng.normal(0, 0.01)), 0.55, 1.35))

    # -- rendering
    def _render(self) -> tuple[np.ndarray, list[BBox]]:
        m = self._margin
        ox, oy = m + float(self._cam[0]), m + float(self._cam[1])
        ix, iy = int(round(ox)), int(round(oy))
        frame = self._bg[iy:iy + self.height, ix:ix + self.width].copy()
        boxes: list[BBox] = []
        W, H = self.width, self.height
        shift = max(1.0, self._side * 0.012)
        pad = int(math.ceil(shift * 4)) + 2  # room for the blurred, offset shadow
        for p in self._placed:
            sh, sw = p.sprite.alpha.shape
            # Sprite centre -> object position in frame coordinates.
            M = cv2.getRotationMatrix2D((sw / 2, sh / 2), p.angle, p.scale)
            M[0, 2] += (p.x - ix) - sw / 2
            M[1, 2] += (p.y - iy) - sh / 2
            # Work only in the region the object (and its shadow) covers: rendering the whole
            # frame per object made rendering several times slower.
            corners = np.array([[0, 0, 1], [sw, 0, 1], [0, sh, 1], [sw, sh, 1]], np.float64) @ M.T
            x0 = max(0, int(math.floor(corners[:, 0].min())) - pad)
            y0 = max(0, int(math.floor(corners[:, 1].min())) - pad)
            x1 = min(W, int(math.ceil(corners[:, 0].max())) + pad)
            y1 = min(H, int(math.ceil(corners[:, 1].max())) + pad)
            if x1 <= x0 or y1 <= y0:
                continue
            Mr = M.copy()
            Mr[0, 2] -= x0
            Mr[1, 2] -= y0
            dsize = (x1 - x0, y1 - y0)
            alpha = cv2.warpAffine(p.sprite.alpha, Mr, dsize, flags=cv2.INTER_LINEAR, borderValue=0)
            if not alpha.any():
                continue
            rgb = cv2.warpAffine(p.sprite.rgb, Mr, dsize, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
            # Soft contact shadow, offset down-right, so objects sit on the table.
            shadow = cv2.GaussianBlur(alpha, (0, 0), shift)
            shadow = cv2.warpAffine(shadow, np.float32([[1, 0, shift], [0, 1, shift]]), dsize)
            roi = frame[y0:y1, x0:x1]
            roi *= (1 - 0.35 * shadow)[..., None]
            a = alpha[..., None]
            frame[y0:y1, x0:x1] = roi * (1 - a) + rgb * a
            if p.labeled:
                vis = (alpha > 0.5).astype(np.uint8)
                count = int(vis.sum())
                # Objects mostly out of view are not labeled (a labeler would not box them).
                if count >= 0.3 * p.sprite.area * p.scale**2 and count > 0:
                    bx, by, bw, bh = cv2.boundingRect(vis)
                    boxes.append(BBox(p.sprite.kind, float(bx + x0), float(by + y0), float(bw), float(bh)))
        frame = frame * (self._illum[..., None] * self._gain * self._tint[None, None, :])
        if self._blur > 0:
            frame = cv2.GaussianBlur(frame, (0, 0), self._blur)
        frame = frame * 255.0 + self._rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(self._noise)
        return np.clip(frame, 0, 255).astype(np.uint8), boxes

    def next_frame(self) -> tuple[np.ndarray, list[BBox]]:
        """The next camera frame: (RGB uint8 array of shape (H, W, 3), boxes of the objects)."""
        if self.frame_index > 0:
            self._step()
        self.frame_index += 1
        return self._render()


def render_dataset(n: int, scenes: Sequence[dict], size: tuple[int, int] = (320, 320),
                   seed: int = 0) -> list[tuple[np.ndarray, list[BBox]]]:
    """`n` independent renders, cycling through `scenes` (`{"objects": [...], "distractors": [...]}`).

    Each image is a new table, lighting and arrangement, so the set is varied enough to
    train on. Deterministic for a given `seed`.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not scenes:
        raise ValueError("scenes is empty: give at least one {'objects': [...], 'distractors': [...]}")
    out = []
    for i in range(n):
        scene = scenes[i % len(scenes)]
        # A seed per image (not one stream) so image i is the same whatever n is.
        stream = SceneStream(scene.get("objects", ()), scene.get("distractors", ()), size=size,
                             seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
        out.append(stream.next_frame())
    return out


def story_scenes(phase: str) -> list[dict]:
    """Scene mixes the story uses for training sets and benchmarks.

    `apples`: phase 1, apples with mild distractors (oranges, balls; no yellow fruit).
    `apples_bananas`: phase 2, apples and bananas together and apart, plus distractors.
    `bananas`: bananas only (the banana that surprises the apple model).
    """
    # Phase 1 keeps distractors mild (an orange or a ball in 3 of 8 scenes, nothing yellow):
    # nothing teaches the apple model that a yellow thing is not an apple, which is what
    # the banana later exposes. Phase 2 shows more distractors, lemons included.
    if phase == "apples":
        return [
            {"objects": ["apple"], "distractors": []},
            {"objects": ["apple", "apple"], "distractors": ["orange"]},
            {"objects": ["apple", "apple", "apple"], "distractors": []},
            {"objects": ["apple"], "distractors": ["ball"]},
            {"objects": ["apple", "apple"], "distractors": []},
            {"objects": ["apple"], "distractors": []},
            {"objects": [], "distractors": ["orange"]},
            {"objects": ["apple", "apple"], "distractors": []},
        ]
    if phase == "apples_bananas":
        return [
            {"objects": ["apple"], "distractors": ["orange"]},
            {"objects": ["banana"], "distractors": []},
            {"objects": ["apple", "banana"], "distractors": ["orange"]},
            {"objects": ["apple", "apple", "banana"], "distractors": []},
            {"objects": ["banana", "banana"], "distractors": ["ball"]},
            {"objects": ["apple", "banana"], "distractors": ["lemon"]},
            {"objects": ["apple", "apple"], "distractors": ["orange", "ball"]},
            {"objects": ["banana"], "distractors": ["lemon", "orange"]},
        ]
    if phase == "bananas":
        return [
            {"objects": ["banana"], "distractors": []},
            {"objects": ["banana", "banana"], "distractors": []},
        ]
    raise ValueError(f"unknown phase {phase!r}; valid: apples, apples_bananas, bananas")
