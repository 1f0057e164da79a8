"""Model-assisted proposals from a model in the real studio registry (tiny trained detector)."""
from __future__ import annotations

import json

import pytest
from test_gate_models import IMAGE_SIZE, models_cache, tiny_models
from test_labeling_queue import upload_stream

from helpers.geometry import iou
from helpers.labeling.queue import LabelQueue
from helpers.sim.oracle import OracleLabeler

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def models(request, tmp_path_factory):
    return tiny_models(models_cache(request, tmp_path_factory))


def _register(studio, model_dir):
    return studio.register_model(model_dir / "model.onnx", json.loads((model_dir / "model.json").read_text())).version


def test_model_proposals_offered_and_switchable(fresh_cloud, models, unique_name):
    studio = fresh_cloud.studio
    studio.add_label("apple")
    good = _register(studio, models["good"])  # a candidate: used when there is no production model
    dev = unique_name("cam")
    truth = upload_stream(studio, dev, 6, objects=("apple",), seed=2, size=IMAGE_SIZE, distractors=())

    q = LabelQueue(studio, device=dev)
    assert q.model_version == good
    assert (fresh_cloud.workspace / "models" / "registry" / f"v{good}" / "model.onnx").is_file()
    first = q.current()
    assert set(first.proposals) == {"model"} and first.offered == "model"
    model_prop = first.proposals["model"]
    assert model_prop.detail["model_version"] == good
    assert model_prop.boxes and all(b.label == "apple" and b.value is not None for b in model_prop.boxes)
    # a tiny model: its boxes find the apple roughly; the point is where they come from
    assert max(iou(b, t) for b in model_prop.boxes for t in truth[1][1]) > 0.25
    q.save(truth[1][1])

    second = q.current()
    assert set(second.proposals) == {"tracking", "model"}
    best = max(second.proposals, key=lambda s: second.proposals[s].score)
    assert second.offered == best and q.source == best
    assert q.select("model") is second.proposals["model"] and q.source == "model"
    assert q.select("tracking") is second.proposals["tracking"]

    report = OracleLabeler(q).run(progress=False)
    assert report.row("tracking").proposals == 5 and report.row("model").proposals == 5
    assert report.row("tracking").mean_iou > 0.8
    assert report.row("model").mean_iou > 0.2
    assert sum(report.offered_by.values()) == 5


def test_auto_prefers_production_and_none_disables(fresh_cloud, models, unique_name):
    studio = fresh_cloud.studio
    studio.add_label("apple")
    prod = _register(studio, models["bad"])
    studio.set_model_stage(prod, "production")
    newer = _register(studio, models["good"])  # newer candidate, but production wins
    dev = unique_name("cam")
    upload_stream(studio, dev, 1, objects=("apple",), seed=3, size=IMAGE_SIZE)
    assert LabelQueue(studio, device=dev).model_version == prod
    assert LabelQueue(studio, device=dev, model=newer).model_version == newer
    q = LabelQueue(studio, device=dev, model=None)
    assert q.model_version is None and q.current().proposals == {}
