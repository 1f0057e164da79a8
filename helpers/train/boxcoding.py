"""Box coding for the `fomo-box` head: boxes -> training targets, head outputs -> boxes.

Targets (CenterNet / TTFNet style) on the stride-8 grid of an S x S input:
  - `heat` (C, h, w): an anisotropic Gaussian per box at its centre cell, peak 1 there;
  - `ltrb` (4, h, w): log of the distances from each cell centre to the box edges, in
    units of the stride (scale-free, so small and large fruit weigh the same);
  - `reg_weight` (h, w): where the box regression is trained: cells inside a box near its
    centre, weighted by the Gaussian (more cells than CenterNet's single centre cell:
    faster convergence on small data sets).
Decoding is `helpers.inference.onnx.decode`, the same function the devices run.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helpers.geometry import BBox
from helpers.inference.onnx import decode as _decode
from helpers.train.model import STRIDE

# TTFNet's alpha: Gaussian sigma = alpha * side / 6.
GAUSS_ALPHA = 0.54
# Cells. A narrower peak makes a fruit whose centre lies near a cell border two almost identical
# cells, one with target 1 and one penalised nearly in full: the network then says ~0.45 on
# both, and apples, lemons and the threshold share one narrow band. Measured on the two-class
# synthetic benchmark (docs/training.md): 0.5 -> 1.0 took apple F1 from 0.85-0.93 to 0.94-0.96.
MIN_SIGMA = 1.0
REG_MIN_WEIGHT = 0.2


def encode(boxes_xyxy: np.ndarray, classes: np.ndarray, num_classes: int, input_size: int,
           stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets for one image whose boxes are already in input pixels.

    Args:
        boxes_xyxy: (N, 4) float x0, y0, x1, y1 in the S x S input.
        classes: (N,) int class indices.
        num_classes: heat-map channels.
        input_size: S.
        stride: grid stride.

    Returns:
        (heat (C, h, w), log_ltrb (4, h, w), reg_weight (h, w)) float32 arrays.
    """
    g = input_size // stride
    heat = np.zeros((num_classes, g, g), np.float32)
    ltrb = np.zeros((4, g, g), np.float32)
    weight = np.zeros((g, g), np.float32)
    if len(boxes_xyxy) == 0:
        return heat, ltrb, weight
    cxs = (np.arange(g, dtype=np.float32) + 0.5) * stride
    # Big boxes first, so where boxes overlap the smaller (front) one owns the regression cells.
    areas = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    for i in np.argsort(-areas):
        x0, y0, x1, y1 = (float(v) for v in boxes_xyxy[i])
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        c = int(classes[i])
        bcx, bcy = (x0 + x1) / 2, (y0 + y1) / 2
        # The peak sits exactly on the centre cell, as the decoder reads boxes at cell centres.
        ix, iy = min(g - 1, max(0, int(bcx // stride))), min(g - 1, max(0, int(bcy // stride)))
        sx = max(MIN_SIGMA, GAUSS_ALPHA * (x1 - x0) / stride / 6)
        sy = max(MIN_SIGMA, GAUSS_ALPHA * (y1 - y0) / stride / 6)
        gx = np.exp(-((np.arange(g) - ix) ** 2) / (2 * sx**2))
        gy = np.exp(-((np.arange(g) - iy) ** 2) / (2 * sy**2))
        gauss = (gy[:, None] * gx[None, :]).astype(np.float32)
        heat[c] = np.maximum(heat[c], gauss)
        # Regression cells: Gaussian above a floor and cell centre inside the box.
        inside = ((cxs[None, :] > x0) & (cxs[None, :] < x1)) & ((cxs[:, None] > y0) & (cxs[:, None] < y1))
        cells = (gauss >= REG_MIN_WEIGHT) & inside
        cells[iy, ix] = True  # tiny boxes: at least the centre cell, even if its centre is outside
        yy, xx = np.nonzero(cells)
        pcx, pcy = cxs[xx], cxs[yy]
        d = np.stack([pcx - x0, pcy - y0, x1 - pcx, y1 - pcy], 0)
        ltrb[:, yy, xx] = np.log(np.maximum(d, 0.5) / stride)
        weight[yy, xx] = np.maximum(gauss[yy, xx], 0.5)
    return heat, ltrb, weight


def decode_outputs(heatmap: np.ndarray, ltrb_pixels: np.ndarray, labels: Sequence[str],
                   image_size: tuple[int, int], input_size: int, score_threshold: float = 0.5,
                   nms_iou: float = 0.45) -> list[BBox]:
    """Boxes from one image's exported-head outputs (probabilities, distances in pixels)."""
    return _decode(heatmap, ltrb_pixels, labels, image_size, input_size, score_threshold, nms_iou)


def boxes_to_arrays(boxes: Sequence[BBox], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) xyxy in image pixels and (N,) class indices."""
    index = {name: i for i, name in enumerate(labels)}
    xyxy = np.array([b.xyxy for b in boxes], np.float32).reshape(-1, 4)
    return xyxy, np.array([index[b.label] for b in boxes], np.int64)


def targets_to_outputs(heat: np.ndarray, log_ltrb: np.ndarray, stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """What a perfect network would output for these targets (for the round-trip test)."""
    return heat, np.exp(log_ltrb) * stride
