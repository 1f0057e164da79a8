"""Edge Impulse's bounding_boxes.labels file: written and read back."""
from __future__ import annotations

import json

import pytest

from helpers.errors import DatasetError
from helpers.geometry import BBox
from helpers.protocol import ei_labels


def test_labels_file_round_trip_drops_scores():
    boxes = {"a.jpg": [BBox("apple", 1, 2, 30, 40, value=0.9)], "b.jpg": [{"label": "banana", "x": 5, "y": 6, "width": 7, "height": 8}]}
    data = ei_labels.encode(boxes)
    doc = json.loads(data)
    assert doc["version"] == 1 and doc["type"] == "bounding-box-labels"
    assert doc["boundingBoxes"]["a.jpg"] == [{"label": "apple", "x": 1, "y": 2, "width": 30, "height": 40}]
    parsed = ei_labels.loads(data)
    assert parsed.type == "bounding-box-labels" and parsed.boxes == doc["boundingBoxes"]
    pretty = ei_labels.dumps(boxes, indent=2)
    assert pretty.endswith("\n") and ei_labels.loads("\ufeff" + pretty).boxes == parsed.boxes


def test_labels_file_errors_name_the_file():
    with pytest.raises(DatasetError, match="x/bounding_boxes.labels is not valid JSON"):
        ei_labels.loads(b"{not json", source="x/bounding_boxes.labels")
    with pytest.raises(DatasetError, match="boundingBoxes"):
        ei_labels.loads('{"version": 1}')
    assert ei_labels.loads('{"boundingBoxes": {"a.png": [1, {"label": "x"}]}}').boxes == {"a.png": [{"label": "x"}]}
