"""nanodet-ft end to end: the real COCO weights' conversion (where `make weights` ran), and a
couple of fine-tuning steps on tiny inputs, exported and run by the device's `OnnxDetector`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.geometry import BBox
from helpers.inference.onnx import OnnxDetector
from helpers.train import pretrained
from helpers.train.finetune import atss_assign, gfl_loss, recommended_params
from helpers.train.nanodet import COCO_LABELS, STRIDES, NanoDet, grid_points
from helpers.train.run import train_detector

ort = pytest.importorskip("onnxruntime")


def _weights():
    try:
        return pretrained.weights_info()
    except pretrained.WeightsMissing as e:
        if __import__("os").environ.get("CI"):
            raise  # CI runs `make weights` first: missing weights there are a failure
        pytest.skip(f"COCO weights not fetched here: {e}")


def test_real_conversion_matches_pytorch():
    """The TF.js graph converted to ONNX and the PyTorch NanoDet loaded by name agree."""
    from helpers.train.tfjs import load_graph, to_onnx

    info = _weights()
    graph = load_graph(info["paths"]["tfjs"])
    raw = to_onnx(graph, (1, 3, 416, 416))
    sess = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 416, 416)).astype(np.float32)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    model = NanoDet()
    model.load_state_dict(torch.load(info["paths"]["state"], weights_only=True))
    model.eval()
    with torch.no_grad():
        cls, reg = model(torch.from_numpy(x))
    cls_onnx = np.concatenate(sorted([v for v in outs.values() if v.shape[-1] == 80], key=lambda v: -v.shape[1]), 1)
    reg_onnx = np.concatenate(sorted([v for v in outs.values() if v.shape[-1] == 44], key=lambda v: -v.shape[1]), 1)
    np.testing.assert_allclose(cls_onnx, torch.sigmoid(cls).numpy(), atol=1e-4)
    np.testing.assert_allclose(reg_onnx, reg.reshape(1, -1, 44).numpy(), atol=2e-3)
    # the cached zero-shot model: decoded boxes + scores, run by the runner's own class
    det = OnnxDetector(info["paths"]["zero_shot"])
    assert det.labels == list(COCO_LABELS) and det.head_type == "gfl" and det.input_size == 416
    frame = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    raw_boxes, raw_scores = det.raw(frame)
    assert raw_boxes.shape == (3549, 4) and raw_scores.shape == (3549, 80)  # 52^2 + 26^2 + 13^2 cells
    assert (raw_boxes >= 0).all() and (raw_boxes <= 416).all() and (raw_boxes[:, 2:] >= raw_boxes[:, :2]).all()
    boxes = det.detect(frame, score_threshold=0.01)
    assert all(0 <= b.x and b.x + b.width <= 320 and 0 <= b.y and b.y + b.height <= 240 for b in boxes)
    card = json.loads((pretrained.weights_dir() / "coco-nanodet" / "model.json").read_text())
    assert card["pretrained"]["licence"].startswith("Apache-2.0") and card["pretrained"]["version"] == "3.0.4"


def test_atss_and_gfl_loss_on_one_box():
    pts, st = grid_points(96)
    counts = [(96 // s) ** 2 for s in STRIDES]
    gt = torch.tensor([[20.0, 20.0, 60.0, 56.0]])
    assigned = atss_assign(pts, st, counts, gt)
    pos = (assigned == 0).nonzero().flatten()
    assert len(pos) > 0 and (assigned[assigned != 0] == -1).all()
    inside = (pts[pos, 0] > 20) & (pts[pos, 0] < 60) & (pts[pos, 1] > 20) & (pts[pos, 1] < 56)
    assert inside.all()
    model = NanoDet(2)
    cls, reg = model(torch.zeros(1, 3, 96, 96))
    loss, parts = gfl_loss(cls, reg, pts, st, counts, [(gt, torch.tensor([1]))])
    assert torch.isfinite(loss) and parts["pos"] == len(pos) and parts["giou"] > 0
    loss.backward()
    assert model.head.gfl[0].weight.grad is not None


def test_every_layer_trains_at_its_depth_scaled_rate():
    """Backbone, neck and head all move on an AdamW step, each by about lr x its LR_SCALE."""
    from helpers.train.finetune import LR_SCALE, param_groups

    torch.manual_seed(0)
    model = NanoDet(2)
    groups = param_groups(model)
    assert sorted(g["scale"] for g in groups) == sorted({*LR_SCALE.values(), 1.0})
    assert all(p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lr = 1e-3
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    for g in opt.param_groups:
        g["lr"] = lr * g["scale"]
    pts, st = grid_points(96)
    counts = [(96 // s) ** 2 for s in STRIDES]
    x = torch.rand(2, 3, 96, 96) * 2 - 1
    cls, reg = model(x)
    loss, _ = gfl_loss(cls, reg, pts, st, counts, [(torch.tensor([[20.0, 20.0, 60.0, 56.0]]), torch.tensor([1])),
                                                   (torch.tensor([[10.0, 30.0, 90.0, 70.0]]), torch.tensor([0]))])
    loss.backward()
    opt.step()
    # Adam's first step moves a weight with a gradient by its group's rate (up to rounding).
    for prefix, scale in (("backbone.", LR_SCALE["backbone."]), ("fpn.", LR_SCALE["fpn."]), ("head.", 1.0)):
        moved = max(float((v - before[k]).abs().max()) for k, v in model.state_dict().items() if k.startswith(prefix))
        assert 0.5 * lr * scale < moved <= 1.01 * lr * scale, (prefix, moved)
    # A frozen prefix leaves that part out of the groups and out of autograd.
    frozen = param_groups(model, frozen=("backbone.",))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert sum(len(g["params"]) for g in frozen) == sum(1 for n, _ in model.named_parameters() if not n.startswith("backbone."))


def _scenes(n, size=96, seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        img = np.full((size, size, 3), 200, np.uint8)
        x, y = rng.integers(5, 45, 2)
        label = ["apple", "banana"][i % 2]
        color = (200, 30, 30) if label == "apple" else (230, 220, 40)
        img[y:y + 40, x:x + 40] = color
        items.append((img, [BBox(label, float(x), float(y), 40.0, 40.0)]))
    return items


def test_finetune_two_steps_export_and_run(tmp_path):
    """A couple of steps from a checkpoint file (no download), exported with the parity check."""
    ckpt = tmp_path / "start.pt"
    torch.manual_seed(0)
    torch.save(NanoDet().state_dict(), ckpt)
    params = recommended_params(input_size=96, epochs=1, batch_size=4, threads=1, pretrained=str(ckpt))
    result = train_detector(_scenes(8), _scenes(2, seed=1), ["apple", "banana"], params, progress=False)
    assert result.pretrained["source"] == f"file:{ckpt}" and result.pretrained["head_rows_from_coco"] == ["apple", "banana"]
    out = tmp_path / "model"
    result.export(out)
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == "nanodet-ft" and card["head"]["type"] == "gfl"
    assert card["preprocessing"]["channel_order"] == "BGR" and card["pretrained"]["sha256"] == pretrained._sha256(ckpt)
    assert card["export"]["parity_max_abs_diff"] <= 1e-3
    det = OnnxDetector(out)
    boxes = det.detect(_scenes(1)[0][0], score_threshold=0.0)
    assert boxes and all(b.label in ("apple", "banana") for b in boxes)


def test_coco_proposer_offers_only_classes_coco_knows():
    from pathlib import Path

    from helpers.labeling.proposals import COCO_SOURCE, CocoProposer
    from helpers.train.data import decode_image

    _weights()
    proposer = CocoProposer(score_threshold=0.02)
    rgb = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    prop = proposer(rgb, ["apple", "lemon"])
    assert prop.source == COCO_SOURCE and prop.detail["classes"] == ["apple"]
    assert {b.label for b in prop.boxes} <= {"apple"}
    assert prop.origin().startswith("COCO model (nanodet-g-coco 3.0.4")
    photo = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "fruit-voc-train" / "apple_1.jpg"
    if photo.is_file():  # a real apple photo (the shared set; optional): COCO proposes the apple
        prop = CocoProposer()(decode_image(photo.read_bytes(), photo.name), ["apple", "banana"])
        assert [b.label for b in prop.boxes][:1] == ["apple"]


def test_multi_scale_batches_train_at_each_size_and_export_at_input_size(tmp_path, monkeypatch):
    """`finetune.MULTI_SCALE`: batches drawn at the listed sizes; validation and export stay at input_size."""
    from helpers.train import finetune

    ckpt = tmp_path / "start.pt"
    torch.manual_seed(0)
    torch.save(NanoDet().state_dict(), ckpt)
    sizes: list[int] = []
    real_augment = finetune.augment

    def recording_augment(rgb, xyxy, cls, size, rng, params=None):
        if rng is not None:  # a training draw (validation resizes without a generator)
            sizes.append(size)
        return real_augment(rgb, xyxy, cls, size, rng, params)

    monkeypatch.setattr(finetune, "MULTI_SCALE", (64, 128))
    monkeypatch.setattr(finetune, "augment", recording_augment)
    params = recommended_params(input_size=96, epochs=3, batch_size=2, threads=1, pretrained=str(ckpt))
    result = train_detector(_scenes(8), _scenes(2, seed=1), ["apple", "banana"], params, progress=False)
    assert set(sizes) == {64, 128} and len(sizes) == 3 * 8  # every training image, at both sizes over the run
    assert all(np.isfinite(h["loss"]) for h in result.history[1:])
    result.export(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "model.json").read_text())["input_size"] == 96
    assert OnnxDetector(tmp_path / "model").detect(_scenes(1)[0][0], score_threshold=0.0)
