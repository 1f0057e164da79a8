"""Box-preserving augmentation for detection (numpy + OpenCV), deterministic per generator.

One affine warp does resize-to-input, zoom in/out, translation and horizontal flip, so
boxes are transformed by the same matrix (axis-aligned: no rotation, boxes stay tight).
Colour jitter keeps hue shifts small: hue is what tells an apple from a banana or an orange.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transforms; `AugmentParams.none()` turns everything off."""

    flip: float = 0.5  # probability of a horizontal flip
    zoom: tuple[float, float] = (0.7, 1.4)  # <1 zooms out (smaller fruit), >1 zooms in (crop)
    shift: float = 0.2  # max translation as a fraction of the input side
    aspect: float = 0.1  # max log-aspect jitter
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    hue_deg: float = 6.0
    blur: float = 0.2  # probability of a Gaussian blur
    noise: float = 0.3  # probability of additive noise
    min_visible: float = 0.4  # drop a box when less than this fraction of it stays in view

    @classmethod
    def none(cls) -> AugmentParams:
        return cls(flip=0.0, zoom=(1.0, 1.0), shift=0.0, aspect=0.0, brightness=0.0, contrast=0.0,
                   saturation=0.0, hue_deg=0.0, blur=0.0, noise=0.0)


def _affine(rng: np.random.Generator | None, w: int, h: int, size: int, p: AugmentParams) -> np.ndarray:
    """2x3 matrix: image pixels -> augmented input pixels."""
    sx, sy = size / w, size / h  # squash to the square input, as the detector does
    if rng is None:
        return np.array([[sx, 0, 0], [0, sy, 0]], np.float64)
    z = float(np.exp(rng.uniform(np.log(p.zoom[0]), np.log(p.zoom[1])))) if p.zoom != (1.0, 1.0) else 1.0
    a = float(np.exp(rng.uniform(-p.aspect, p.aspect))) if p.aspect else 1.0
    zx, zy = z * a, z / a
    # Scale about the input centre, then translate.
    tx = rng.uniform(-p.shift, p.shift) * size if p.shift else 0.0
    ty = rng.uniform(-p.shift, p.shift) * size if p.shift else 0.0
    c = size / 2
    m = np.array([[sx * zx, 0, c - c * zx + tx], [0, sy * zy, c - c * zy + ty]], np.float64)
    if p.flip and rng.random() < p.flip:
        m = np.array([[-1, 0, size], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
    return m


def transform_boxes(xyxy: np.ndarray, m: np.ndarray, size: int, min_visible: float) -> tuple[np.ndarray, np.ndarray]:
    """Apply an axis-aligned affine to boxes; clip to the input; return (boxes, kept mask)."""
    if len(xyxy) == 0:
        return xyxy.reshape(0, 4).astype(np.float32), np.zeros(0, bool)
    xs = xyxy[:, [0, 2]] * m[0, 0] + m[0, 2]
    ys = xyxy[:, [1, 3]] * m[1, 1] + m[1, 2]
    x0, x1 = xs.min(1), xs.max(1)  # a flip swaps left and right
    y0, y1 = ys.min(1), ys.max(1)
    full = (x1 - x0) * (y1 - y0)
    cx0, cy0 = np.clip(x0, 0, size), np.clip(y0, 0, size)
    cx1, cy1 = np.clip(x1, 0, size), np.clip(y1, 0, size)
    vis = (cx1 - cx0) * (cy1 - cy0)
    keep = (vis >= min_visible * np.maximum(full, 1e-6)) & (cx1 - cx0 >= 2) & (cy1 - cy0 >= 2)
    out = np.stack([cx0, cy0, cx1, cy1], 1).astype(np.float32)
    return out[keep], keep


def _color(rng: np.random.Generator, img: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Brightness/contrast/saturation/hue jitter on a float32 RGB image in [0, 255]."""
    if p.hue_deg or p.saturation:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        if p.hue_deg:
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-p.hue_deg, p.hue_deg) / 2) % 180  # OpenCV hue is deg/2
        if p.saturation:
            hsv[..., 1] *= rng.uniform(1 - p.saturation, 1 + p.saturation)
        img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if p.contrast:
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - p.contrast, 1 + p.contrast) + mean
    if p.brightness:
        img = img * rng.uniform(1 - p.brightness, 1 + p.brightness)
    return img


def augment(rgb: np.ndarray, xyxy: np.ndarray, classes: np.ndarray, size: int,
            rng: np.random.Generator | None, params: AugmentParams = AugmentParams()):
    """Resize (and, with a generator, augment) one image and its boxes to the S x S input.

    Args:
        rgb: (H, W, 3) uint8 image.
        xyxy: (N, 4) boxes in image pixels.
        classes: (N,) class indices.
        size: S, the model input side.
        rng: None for the plain resize used at validation time.
        params: augmentation ranges.

    Returns:
        (image uint8 (S, S, 3), boxes (M, 4) in input pixels, classes (M,)).
    """
    h, w = rgb.shape[:2]
    m = _affine(rng, w, h, size, params)
    shrinking = m[0, 0] ** 2 < 1 and m[1, 1] ** 2 < 1
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    # Reflect padding would create mirrored half-fruit without labels; a flat mean colour
    # does not, and zooming out onto a plain border is what a wider camera view looks like.
    fill = cv2.mean(rgb)[:3]  # per-channel mean, as numpy's mean(0) but without a float64 copy of the image
    out = cv2.warpAffine(rgb, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    boxes, keep = transform_boxes(np.asarray(xyxy, np.float32).reshape(-1, 4), m, size,
                                  params.min_visible if rng is not None else 0.0)
    classes = np.asarray(classes, np.int64).reshape(-1)[keep]
    if rng is None:
        return out, boxes, classes
    img = _color(rng, out.astype(np.float32), params)
    if params.blur and rng.random() < params.blur:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    if params.noise and rng.random() < params.noise:
        img = img + rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), boxes, classes
