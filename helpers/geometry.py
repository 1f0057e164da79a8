"""Bounding boxes in Edge Impulse's convention: pixels, top-left x/y, width/height."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class BBox:
    """One box. `value` is a detector score (absent for labels)."""

    label: str
    x: float
    y: float
    width: float
    height: float
    value: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["value"] is None:
            del d["value"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BBox:
        return cls(
            label=str(d["label"]),
            x=float(d["x"]),
            y=float(d["y"]),
            width=float(d.get("width", d.get("w"))),
            height=float(d.get("height", d.get("h"))),
            value=None if d.get("value") is None else float(d["value"]),
        )

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    def clipped(self, width: float, height: float) -> BBox:
        """This box clipped to an image of the given size."""
        x0, y0, x1, y1 = self.xyxy
        x0, y0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
        x1, y1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        return BBox(self.label, x0, y0, x1 - x0, y1 - y0, self.value)


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two boxes (labels ignored)."""
    ax0, ay0, ax1, ay1 = a.xyxy
    bx0, by0, bx1, by1 = b.xyxy
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def boxes_from_dicts(items: Iterable[dict[str, Any]]) -> list[BBox]:
    return [BBox.from_dict(d) for d in items]


def boxes_to_dicts(boxes: Iterable[BBox]) -> list[dict[str, Any]]:
    return [b.to_dict() for b in boxes]
