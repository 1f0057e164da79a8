"""Edge Impulse's image-block resize modes: resize a frame as the studio does, map boxes back.

The `.eim` (through the SDK) and TFLite backends take input the way Edge Impulse's image block
made it: "squash" stretches, "fit-shortest" crops the centre to the input's aspect ratio,
"fit-longest" letterboxes with black bars.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from helpers.errors import ModelError

EIM_RESIZE_MODES = ("squash", "fit-shortest", "fit-longest")


def eim_box_to_image(box: dict[str, Any], mode: str, input_wh: tuple[int, int], image_wh: tuple[int, int]) -> tuple[float, float, float, float]:
    """An Edge Impulse box (x, y, width, height in the model's input pixels) -> (x, y, w, h) in the
    original image, undoing the resize the SDK applied (`get_features_from_image_with_studio_mode`):

    - "squash": the image was stretched to the input;
    - "fit-shortest": the centre was cropped to the input's aspect ratio, then resized;
    - "fit-longest": the image was resized to fit and letterboxed (black bars centred).
    """
    iw, ih = input_wh
    W, H = image_wh
    x0, y0 = float(box["x"]), float(box["y"])
    x1, y1 = x0 + float(box["width"]), y0 + float(box["height"])
    if mode == "squash":
        sx, sy, ox, oy, px, py = W / iw, H / ih, 0.0, 0.0, 0.0, 0.0
    elif mode == "fit-shortest":
        aspect = iw / ih
        if W / H > aspect:
            new_w = int(H * aspect)
            sx, sy, ox, oy = new_w / iw, H / ih, float((W - new_w) // 2), 0.0
        else:
            new_h = int(W / aspect)
            sx, sy, ox, oy = W / iw, new_h / ih, 0.0, float((H - new_h) // 2)
        px = py = 0.0
    elif mode == "fit-longest":
        scale = min(iw / W, ih / H)
        new_w, new_h = int(W * scale), int(H * scale)
        px, py = float((iw - new_w) // 2), float((ih - new_h) // 2)
        sx, sy, ox, oy = W / new_w, H / new_h, 0.0, 0.0
    else:
        raise ModelError(f"the .eim reports image_resize_mode={mode!r}; supported: {', '.join(EIM_RESIZE_MODES)}")
    X0, Y0 = (x0 - px) * sx + ox, (y0 - py) * sy + oy
    X1, Y1 = (x1 - px) * sx + ox, (y1 - py) * sy + oy
    X0, X1 = min(max(X0, 0.0), W), min(max(X1, 0.0), W)
    Y0, Y1 = min(max(Y0, 0.0), H), min(max(Y1, 0.0), H)
    return X0, Y0, X1 - X0, Y1 - Y0


def resize_like_studio(rgb: np.ndarray, mode: str, input_wh: tuple[int, int]) -> np.ndarray:
    """Resize as Edge Impulse's image block does (the SDK's `get_features_from_image_with_studio_mode`):
    "squash" stretches, "fit-shortest" crops the centre to the input's aspect ratio, "fit-longest"
    letterboxes with black bars; always INTER_AREA. `eim_box_to_image` undoes it for boxes."""
    iw, ih = input_wh
    H, W = rgb.shape[:2]
    if mode == "squash":
        return cv2.resize(rgb, (iw, ih), interpolation=cv2.INTER_AREA)
    if mode == "fit-shortest":
        aspect = iw / ih
        if W / H > aspect:
            new_w = int(H * aspect)
            off = (W - new_w) // 2
            crop = rgb[:, off:off + new_w]
        else:
            new_h = int(W / aspect)
            off = (H - new_h) // 2
            crop = rgb[off:off + new_h, :]
        return cv2.resize(crop, (iw, ih), interpolation=cv2.INTER_AREA)
    if mode == "fit-longest":
        scale = min(iw / W, ih / H)
        new_w, new_h = int(W * scale), int(H * scale)
        top, left = (ih - new_h) // 2, (iw - new_w) // 2
        small = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        return cv2.copyMakeBorder(small, top, ih - new_h - top, left, iw - new_w - left, cv2.BORDER_CONSTANT, value=0)
    raise ModelError(f"preprocessing.resize={mode!r} is not supported; valid: {', '.join(EIM_RESIZE_MODES)}")
