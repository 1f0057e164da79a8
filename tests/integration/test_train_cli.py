"""`python -m helpers.train` and `python -m helpers.evaluate` end to end on a synthetic
Edge Impulse-layout dataset (written here, so the test needs no shared data)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from helpers.sim.scenes import render_dataset

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def write_ei(dest: Path, items, split_dir: str = "training") -> Path:
    """Images + `bounding_boxes.labels` in Edge Impulse's layout under dest/split_dir."""
    folder = dest / split_dir
    folder.mkdir(parents=True, exist_ok=True)
    labels_path = folder / "bounding_boxes.labels"
    boxes = json.loads(labels_path.read_text())["boundingBoxes"] if labels_path.exists() else {}
    start = len(boxes)
    for k, (rgb, bxs) in enumerate(items):
        name = f"img{start + k:04d}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        boxes[name] = [{"label": b.label, "x": int(round(b.x)), "y": int(round(b.y)),
                        "width": int(round(b.width)), "height": int(round(b.height))} for b in bxs]
    labels_path.write_text(json.dumps({"version": 1, "type": "bounding-box-labels", "boundingBoxes": boxes}))
    return dest


def run(module: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGELOOP_WORKSPACE": str(Path(args[-1]).parent / "ws")}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def apple_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ei")
    scenes = [{"objects": ["apple"]}, {"objects": ["apple", "apple"]}]
    write_ei(root, render_dataset(64, scenes, size=(96, 96), seed=11), "training")
    write_ei(root, render_dataset(16, scenes, size=(96, 96), seed=12), "testing")
    return root


def test_train_then_evaluate(apple_dataset, tmp_path):
    out = tmp_path / "model"
    r = run("helpers.train", "--dataset", str(apple_dataset), "--format", "ei", "--epochs", "30",
            "--input-size", "96", "--seed", "0", "--width", "0.35", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert (out / "model.onnx").is_file() and (out / "model.json").is_file()
    card = json.loads((out / "model.json").read_text())
    assert card["labels"] == ["apple"] and card["input_size"] == 96 and card["arch"] == "fomo-box"
    assert card["metrics"]["eval_split"] == "test" and card["dataset"]["format"] == "ei"
    assert summary["evaluation"]["split"] == "test"

    report_path = tmp_path / "report.json"
    r = run("helpers.evaluate", "--model", str(out), "--dataset", str(apple_dataset), "--format", "ei",
            "--split", "test", "--quiet", "--json", str(report_path))
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep == json.loads(report_path.read_text())
    assert rep["images"] == 16
    # a tiny model after ~10-20 s of training: modest, but clearly learned
    assert rep["per_class"]["apple"]["f1"] >= 0.5, rep["per_class"]
    assert rep["latency_ms"]["median"] > 0


def test_clear_errors(apple_dataset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("helpers.train", "--dataset", str(empty), "--format", "ei", "--out", str(tmp_path / "m1"))
    assert r.returncode == 2 and r.stderr.startswith("error:"), r.stderr[-500:]

    one = write_ei(tmp_path / "one", render_dataset(1, [{"objects": ["apple"]}], size=(96, 96)))
    r = run("helpers.train", "--dataset", str(one), "--format", "ei", "--out", str(tmp_path / "m2"))
    assert r.returncode == 2 and "1 image" in r.stderr, r.stderr[-500:]

    # a model whose labels differ from the dataset's
    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox

    other = tmp_path / "other_model"
    export_onnx(FomoBox(1, width=0.35).eval(), other, {"labels": ["banana"], "input_size": 96})
    r = run("helpers.evaluate", "--model", str(other), "--dataset", str(apple_dataset), "--quiet",
            "--json", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "do not match" in r.stderr, r.stderr[-500:]


def test_nanodet_trains_on_every_image_at_a_fixed_threshold(apple_dataset, tmp_path):
    """`--val-fraction 0`: no validation split, the last epoch kept, the given threshold in the card."""
    import torch

    from helpers.train.nanodet import NanoDet

    ckpt = tmp_path / "start.pt"  # a NanoDet checkpoint file: no COCO download needed here
    torch.manual_seed(0)
    torch.save(NanoDet().state_dict(), ckpt)
    common = ("--dataset", str(apple_dataset), "--format", "ei", "--arch", "nanodet-ft", "--input-size", "96",
              "--pretrained", str(ckpt), "--quiet")
    # no validation and no threshold: refused before any training, saying what to pass
    r = run("helpers.train", *common, "--val-fraction", "0", "--out", str(tmp_path / "m0"))
    assert r.returncode == 2 and "--score-threshold" in r.stderr, r.stderr[-500:]
    assert not (tmp_path / "m0" / "model.onnx").exists()
    r = run("helpers.train", "--dataset", str(apple_dataset), "--format", "ei", "--val-fraction", "0",
            "--score-threshold", "0.4", "--quiet", "--out", str(tmp_path / "m1"))
    assert r.returncode == 2 and "nanodet-ft only" in r.stderr, r.stderr[-500:]

    out = tmp_path / "model"
    r = run("helpers.train", *common, "--epochs", "2", "--val-fraction", "0", "--score-threshold", "0.4",
            "--out", str(out), timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    card = json.loads((out / "model.json").read_text())
    assert card["dataset"]["train_images"] == 64 and card["dataset"]["val_images"] == 0  # every training image
    assert card["score_threshold"] == 0.4 and card["threshold_choice"]["rule"] == "fixed"
    assert card["training"]["val_fraction"] == 0 and card["training"]["score_threshold"] == 0.4
    assert summary["val_f1"] is None and summary["best_epoch"] == 2 == summary["epochs_run"] - 1  # the last epoch
    assert card["metrics"]["eval_split"] == "test" and summary["evaluation"]["images"] == 16
