"""The evaluation gate with real ONNX models trained by helpers.train, in a real local studio.

Two tiny apple detectors are trained once (about 15 s on two cores) and cached in pytest's
cache folder, keyed by the recipe and the training code, so later runs reuse them:
`good` (30 epochs, finds most apples) and `bad` (1 epoch, finds almost nothing).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from helpers.deploy.gate import GateRefused, evaluation_gate, heldout_items
from helpers.sim.scenes import render_dataset

pytestmark = pytest.mark.timeout(300)

SCENES = [{"objects": ["apple"]}, {"objects": ["apple", "apple"]}]
IMAGE_SIZE = (96, 96)
RECIPES = {
    "good": dict(input_size=64, width=0.5, epochs=30, min_epochs=1, patience=50, threads=1, batch_size=16, lr=8e-3, seed=0),
    "bad": dict(input_size=64, width=0.5, epochs=1, min_epochs=1, patience=50, threads=1, batch_size=16, lr=8e-3, seed=1,
                ema_decay=0.0),
}


def _code_hash() -> str:
    root = Path(__file__).resolve().parents[2] / "helpers"
    h = hashlib.sha256()
    for p in sorted((root / "train").glob("*.py")) + sorted((root / "inference").glob("*.py")) + [
            root / "sim" / "render.py", root / "sim" / "scenes.py"]:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def tiny_models(cache_root: Path, names=tuple(RECIPES)) -> dict[str, Path]:
    """`{"good": dir, "bad": dir}` (or just `names`) of exported models (model.onnx + model.json),
    trained when not cached."""
    from helpers.train.export import export_result
    from helpers.train.run import train_detector
    from helpers.train.trainer import TrainParams

    out: dict[str, Path] = {}
    items = None
    for name in names:
        recipe = RECIPES[name]
        key = hashlib.sha256(json.dumps([recipe, SCENES, IMAGE_SIZE, _code_hash()], sort_keys=True).encode()).hexdigest()[:16]
        dest = cache_root / f"{name}-{key}"
        if not (dest / "model.onnx").is_file() or not (dest / "model.json").is_file():
            if items is None:
                items = render_dataset(60, SCENES, size=IMAGE_SIZE, seed=1)
            result = train_detector(items[:48], items[48:], ["apple"], TrainParams(**recipe), progress=False)
            tmp = cache_root / f".{name}-{key}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            export_result(result, tmp, name=f"test-{name}")
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        out[name] = dest
    return out


def models_cache(request, tmp_path_factory) -> Path:
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("edgeloop-tiny-models")) if cache is not None else tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module")
def models(request, tmp_path_factory) -> dict[str, Path]:
    return tiny_models(models_cache(request, tmp_path_factory))


def _register(studio, model_dir: Path) -> int:
    card = json.loads((model_dir / "model.json").read_text())
    return studio.register_model(model_dir / "model.onnx", card).version


def _upload_heldout(studio, n=12, seed=99):
    from helpers.widgets import encode_jpeg

    for i, (rgb, boxes) in enumerate(render_dataset(n, SCENES, size=IMAGE_SIZE, seed=seed)):
        name = f"heldout-{seed}-{i}.jpg"
        studio.upload([(name, encode_jpeg(rgb, quality=95))], category="testing", boxes={name: boxes})


def test_gate_promotes_better_refuses_worse(fresh_cloud, models, tmp_path):
    studio = fresh_cloud.studio
    _upload_heldout(studio)
    items = heldout_items(studio)
    assert len(items) == 12 and all(boxes for _, boxes in items)

    bad = _register(studio, models["bad"])
    studio.set_model_stage(bad, "production")
    good = _register(studio, models["good"])

    # a better candidate: promoted, the old production retired
    result = evaluation_gate(studio, good, tolerance=0.02, workdir=tmp_path / "gate1")
    assert result.passed and result.promoted and not result.forced
    assert result.production == bad and not result.regressions
    stages = {m.version: m.stage for m in studio.models()}
    assert stages == {bad: "retired", good: "production"}
    recall = {r.label: r for r in result.rows if r.metric == "recall"}
    assert recall["apple"].candidate > recall["apple"].production + 0.3
    assert "gate" in result.html() and "passed" in result.summary()

    # a worse candidate: refused with the table of what regressed, nothing changes in the studio
    worse = _register(studio, models["bad"])
    with pytest.raises(GateRefused) as err:
        evaluation_gate(studio, worse, tolerance=0.02, workdir=tmp_path / "gate2")
    msg = str(err.value)
    assert "regressed against production v%d" % good in msg and "force=True" in msg
    assert "90% upper bound" in msg  # a drop beyond tolerance and beyond the held-out set's noise
    assert all(r.upper is not None and r.upper < 0 for r in err.value.rows)
    assert any(r.label == "apple" and r.metric == "recall" for r in err.value.rows)
    assert {m.version: m.stage for m in studio.models()}[worse] == "candidate"
    assert {m.version: m.stage for m in studio.models()}[good] == "production"

    # explicitly forced: promoted, and the result says it was forced
    forced = evaluation_gate(studio, worse, force=True, workdir=tmp_path / "gate3")
    assert forced.forced and forced.promoted and not forced.passed
    stages = {m.version: m.stage for m in studio.models()}
    assert stages[worse] == "production" and stages[good] == "retired"
