"""The studio's security rules, driven through the real local cloud over HTTP."""
from __future__ import annotations

import json

import pytest
import requests
from test_runner_model import tiny_detector

from helpers.errors import ServiceError

pytestmark = pytest.mark.timeout(120)

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return tiny_detector(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.mark.parametrize("labels, field", [
    ([HOSTILE], "card.labels[0]"),
    (["apple", "Banana<script>"], "card.labels[1]"),
    (["apple", 3], "card.labels[1]"),
    ("apple", "card.labels"),
    ([], "card.labels"),
])
def test_card_with_labels_that_are_not_plain_names_is_refused(cloud, onnx_path, labels, field):
    before = [m.version for m in cloud.studio.models()]
    with pytest.raises(ServiceError) as exc:
        cloud.studio.register_model(onnx_path, {"labels": labels, "input_size": 64})
    assert exc.value.status == 400 and exc.value.field == field, exc.value
    assert "lowercase name such as 'apple'" in str(exc.value) or "list of label names" in str(exc.value)
    assert [m.version for m in cloud.studio.models()] == before  # nothing registered
    # the same refusal for a raw multipart upload (the Studio API, not only our client)
    r = requests.post(f"{cloud.url}/api/models", headers={"x-api-key": cloud.studio.api_key.get_secret_value()},
                      files={"model": ("model.onnx", onnx_path.read_bytes()),
                             "card": (None, json.dumps({"labels": labels}))}, timeout=10)
    assert r.status_code == 400 and r.json()["field"] == field


def test_card_with_plain_labels_is_registered(cloud, onnx_path):
    v = cloud.studio.register_model(onnx_path, {"labels": ["apple", "green apple", "banana_2"], "input_size": 64})
    assert v.card["labels"] == ["apple", "green apple", "banana_2"]
