"""Detector networks in plain PyTorch.

`fomo-box` (the default): a compact MobileNetV2-style backbone (inverted residual blocks,
ReLU6, batch norm) cut at stride 8 as Edge Impulse's FOMO is, with a small top-down path
from stride 16 and 32 so the box-size head sees whole bananas, and two heads on the stride-8
grid: a per-class centre heat map (CenterNet) and left/top/right/bottom distances.

`ssdlite320`: torchvision's SSDLite320-MobileNetV3, the tutorial's model class, for the
comparison benchmark only. It needs the `[ssd]` extra; see `build_ssdlite`.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from helpers.errors import MissingExtra

ARCHS = ("fomo-box", "ssdlite320", "nanodet-ft")  # nanodet-ft: helpers.train.finetune
STRIDE = 8
# log-distance clamp: exp(6) * 8 px covers any box in a 320 px input; the lower bound keeps
# exp() finite for untrained heads.
LOG_LTRB_RANGE = (-4.0, 6.0)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round channel counts as MobileNet does, so the widths stay hardware-friendly."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, project 1x1 (linear), residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(cin, hidden, 1))
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden), ConvBNReLU(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res else self.block(x)


class FomoBox(nn.Module):
    """MobileNetV2-style detector at stride 8 with CenterNet heads.

    Args:
        num_classes: heat-map channels (one per label).
        width: MobileNetV2 width multiplier (FOMO uses 0.35; 0.5 is the default here).
        in_channels: 3 for RGB input, 1 for greyscale.

    `forward` returns raw `(heat_logits, log_ltrb)`; `export_forward` (used for ONNX) returns
    `(heatmap probabilities, ltrb distances in input pixels)`, the contract `helpers.inference.onnx`
    decodes.
    """

    def __init__(self, num_classes: int, width: float = 0.5, in_channels: int = 3):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (greyscale) or 3 (RGB), got {in_channels}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        c = lambda n: _make_divisible(n * width)  # noqa: E731
        # (expand, channels, repeats, stride) as in MobileNetV2, truncated after stride 32.
        cfg8 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2)]
        cfg16 = [(6, 64, 3, 2), (6, 96, 2, 1)]
        cfg32 = [(6, 160, 2, 2)]
        self.stem = ConvBNReLU(in_channels, c(32), 3, 2)
        cin = c(32)

        def stage(cfg):
            nonlocal cin
            blocks = []
            for t, ch, n, s in cfg:
                for i in range(n):
                    blocks.append(InvertedResidual(cin, c(ch), s if i == 0 else 1, t))
                    cin = c(ch)
            return nn.Sequential(*blocks)

        self.s8 = stage(cfg8)
        ch8 = cin
        self.s16 = stage(cfg16)
        ch16 = cin
        self.s32 = stage(cfg32)
        ch32 = cin
        neck = max(32, c(64))
        # Top-down path (a tiny FPN): lateral 1x1s, upsample, add. Gives the stride-8 grid
        # the receptive field of stride 32 without losing FOMO's fine centre grid.
        self.lat8 = ConvBNReLU(ch8, neck, 1)
        self.lat16 = ConvBNReLU(ch16, neck, 1)
        self.lat32 = ConvBNReLU(ch32, neck, 1)
        self.fuse = nn.Sequential(ConvBNReLU(neck, neck, 3, groups=neck), ConvBNReLU(neck, neck, 1))
        self.heat = nn.Sequential(ConvBNReLU(neck, neck, 3, groups=neck), nn.Conv2d(neck, num_classes, 1))
        self.box = nn.Sequential(ConvBNReLU(neck, neck, 3, groups=neck), nn.Conv2d(neck, 4, 1))
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Focal-loss prior (RetinaNet/CenterNet): start predicting p=0.01 everywhere so the
        # many background cells do not swamp the first steps.
        nn.init.constant_(self.heat[-1].bias, -math.log((1 - 0.01) / 0.01))
        nn.init.normal_(self.heat[-1].weight, std=0.01)
        # Start the box head at distances ~2 cells (log(2)), a typical fruit half-size.
        nn.init.normal_(self.box[-1].weight, std=0.01)
        nn.init.constant_(self.box[-1].bias, math.log(2.0))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        f8 = self.s8(x)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.lat32(f32)
        p = F.interpolate(p, size=f16.shape[-2:], mode="nearest") + self.lat16(f16)
        p = F.interpolate(p, size=f8.shape[-2:], mode="nearest") + self.lat8(f8)
        return self.fuse(p)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.heat(f), self.box(f)

    def export_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat, log_ltrb = self.forward(x)
        return torch.sigmoid(heat), torch.exp(log_ltrb.clamp(*LOG_LTRB_RANGE)) * STRIDE


class ExportWrapper(nn.Module):
    """Makes `export_forward` the traced forward for `torch.onnx.export`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.export_forward(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- SSDLite
def _torchvision():
    """Import torchvision or say which extra brings it."""
    try:
        import torchvision  # noqa: F401
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    except ImportError as e:
        raise MissingExtra(
            "the ssdlite320 architecture needs torchvision, which is not installed: "
            "run `pip install .[ssd]` (or `pip install -e .[ssd]` in this checkout); "
            "the default `fomo-box` architecture needs nothing extra"
        ) from e
    return ssdlite320_mobilenet_v3_large


def build_ssdlite(num_classes: int, input_size: int = 320) -> nn.Module:
    """torchvision's SSDLite320-MobileNetV3-Large from scratch (no downloads: weights=None).

    `num_classes` excludes the background; torchvision counts it, so we pass +1.

    Raises:
        MissingExtra: torchvision is not installed.
    """
    ctor = _torchvision()
    if input_size != 320:
        raise ValueError(f"ssdlite320 takes 320 px inputs (its anchors are fixed), got input_size={input_size}")
    # No pretrained weights: this machine and the workshop are offline. The builder fixes the
    # size at 320x320 itself; the mean/std override its [-1, 1] scaling so the exported
    # wrapper can take the same normalised tensor as every other model here.
    return ctor(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


class SSDExportWrapper(nn.Module):
    """SSD without torchvision's data-dependent post-processing, for a static ONNX graph.

    Outputs `boxes` (1, A, 4) as x0, y0, x1, y1 in input pixels and `scores` (1, A, C)
    softmax probabilities without the background column; `helpers.inference.onnx` thresholds and
    runs NMS with OpenCV, as it does for `fomo-box`.

    The input is the already-normalised tensor from `helpers.inference.onnx.preprocess`, so the
    wrapper skips torchvision's GeneralizedRCNNTransform (normalising twice would be wrong).
    """

    def __init__(self, ssd: nn.Module, input_size: int):
        super().__init__()
        self.ssd = ssd
        self.input_size = input_size
        from torchvision.models.detection.image_list import ImageList  # the optional [ssd] extra (see _torchvision)

        dummy = torch.zeros(1, 3, input_size, input_size)
        # Only the feature-map sizes matter for the anchors; eval mode, because batch norm
        # cannot run on one image of 1x1 features in training mode (the last SSD levels).
        was_training = self.ssd.training
        self.ssd.eval()
        with torch.no_grad():
            feats = list(self.ssd.backbone(dummy).values())
        self.ssd.train(was_training)
        anchors = self.ssd.anchor_generator(ImageList(dummy, [(input_size, input_size)]), feats)[0]
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, x: torch.Tensor):
        feats = list(self.ssd.backbone(x).values())
        out = self.ssd.head(feats)
        boxes = self.ssd.box_coder.decode_single(out["bbox_regression"][0], self.anchors)
        boxes = boxes.clamp(0, self.input_size)
        scores = F.softmax(out["cls_logits"][0], dim=-1)[:, 1:]
        return boxes[None], scores[None]
