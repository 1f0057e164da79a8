"""The TF.js -> ONNX converter on a tiny graph this test writes itself, against plain numpy."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.train.tfjs import TfjsError, load_graph, to_onnx

ort = pytest.importorskip("onnxruntime")


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _node(name, op, inputs=(), **attr):
    return {"name": name, "op": op, "input": list(inputs), "attr": attr}


def write_tiny_graph(folder: Path, rng: np.random.Generator, extra_nodes=()) -> dict[str, np.ndarray]:
    """NCHW input -> NHWC -> pad -> conv s2 + bias -> LeakyReLU -> bilinear x2 -> concat with a
    max-pooled branch -> sigmoid -> NCHW -> reshape (shape built by SparseToDense) -> split.

    Weights are stored as TF.js does: the filter float16-quantized, the bias uint8 affine.
    """
    w = rng.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32)  # HWIO
    w16 = w.astype(np.float16)
    q = rng.integers(0, 256, 4).astype(np.uint8)
    scale, minimum = 0.01, -1.0
    consts = {
        "perm_in": np.array([0, 2, 3, 1], np.int32), "perm_out": np.array([0, 3, 1, 2], np.int32),
        "pads": np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32),
        "filter": w16, "bias": q,
        "size": np.array([8, 8], np.int32),
        "pool_pads": np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32), "neg_inf": np.array(-np.inf, np.float32),
        "axis": np.array(3, np.int32),
        "sp_idx": np.array([2], np.int64), "sp_shape": np.array([3], np.int32), "sp_val": np.array(-1, np.int32),
        "sp_def": np.array(0, np.int32), "base_shape": np.array([1, 7, 0], np.int32),
        "split_sizes": np.array([3, 4], np.int32), "split_axis": np.array(1, np.int32),
    }
    manifest, blob = [], b""
    for name, v in consts.items():
        entry = {"name": name, "shape": list(v.shape)}
        if name == "filter":
            entry.update(dtype="float32", quantization={"dtype": "float16", "original_dtype": "float32"})
        elif name == "bias":
            entry.update(dtype="float32", quantization={"dtype": "uint8", "scale": scale, "min": minimum,
                                                        "original_dtype": "float32"})
        elif v.dtype == np.float32:
            entry["dtype"] = "float32"
        else:
            entry["dtype"] = "int32"
            v = v.astype(np.int32)
        manifest.append(entry)
        blob += v.astype(v.dtype.newbyteorder("<")).tobytes()
    nodes = [_node("x", "Placeholder", dtype={"type": "DT_FLOAT"})]
    nodes += [_node(k, "Const", value={}, dtype={"type": "DT_FLOAT"}) for k in consts]
    nodes += [
        _node("nhwc", "Transpose", ["x", "perm_in"]),
        _node("pad", "Pad", ["nhwc", "pads"]),
        _node("conv", "Conv2D", ["pad", "filter"], strides={"list": {"i": ["1", "2", "2", "1"]}},
              padding=_s("VALID"), data_format=_s("NHWC"), dilations={"list": {"i": ["1", "1", "1", "1"]}}),
        _node("biased", "Add", ["conv", "bias"]),
        _node("act", "LeakyRelu", ["biased"], alpha={"f": 0.1}),
        _node("up", "ResizeBilinear", ["act", "size"], half_pixel_centers={"b": True}, align_corners={"b": False}),
        _node("ppad", "PadV2", ["nhwc", "pool_pads", "neg_inf"]),
        _node("pool", "MaxPool", ["ppad"], ksize={"list": {"i": ["1", "3", "3", "1"]}},
              strides={"list": {"i": ["1", "2", "2", "1"]}}, padding=_s("VALID"), data_format=_s("NHWC")),
        _node("pool_up", "ResizeBilinear", ["pool", "size"], half_pixel_centers={"b": True}, align_corners={"b": False}),
        _node("cat", "ConcatV2", ["up", "pool_up", "axis"]),
        _node("sig", "Sigmoid", ["cat"]),
        _node("nchw", "Transpose", ["sig", "perm_out"]),
        _node("dense", "SparseToDense", ["sp_idx", "sp_shape", "sp_val", "sp_def"]),
        _node("shape", "AddV2", ["base_shape", "dense"]),
        _node("flat", "Reshape", ["nchw", "shape"]),
        _node("parts", "SplitV", ["flat", "split_sizes", "split_axis"]),
        _node("out_a", "Identity", ["parts"]),
        _node("out_b", "Identity", ["parts:1"]),
        *extra_nodes,
    ]
    doc = {"format": "graph-model", "generatedBy": "test", "convertedBy": "test",
           "signature": {"inputs": {"x:0": {}}, "outputs": {"out_a:0": {}, "out_b:0": {}}},
           "modelTopology": {"node": nodes},
           "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": manifest}]}
    (folder / "model.json").write_text(json.dumps(doc))
    (folder / "group1-shard1of1.bin").write_bytes(blob)
    return {"filter": w16.astype(np.float32), "bias": q.astype(np.float32) * np.float32(scale) + np.float32(minimum)}


# ----------------------------------------------------------------------------- numpy reference
def conv_nhwc(x, w, stride):
    n, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, oh, ow, co), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def bilinear_half_pixel(x, oh, ow):
    n, h, w, c = x.shape

    def coords(o, i):
        src = np.maximum((np.arange(o) + 0.5) * i / o - 0.5, 0)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, i - 1), src - lo

    y0, y1, fy = coords(oh, h)
    x0, x1, fx = coords(ow, w)
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bot = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bot * fy[None, :, None, None]


def maxpool_pad1(x):
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    oh, ow = (p.shape[1] - 3) // 2 + 1, (p.shape[2] - 3) // 2 + 1
    return np.stack([np.stack([p[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max((1, 2)) for j in range(ow)], 1)
                     for i in range(oh)], 1)


def reference(x_nchw, weights):
    x = x_nchw.transpose(0, 2, 3, 1).astype(np.float64)
    y = conv_nhwc(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), weights["filter"], 2) + weights["bias"]
    y = np.where(y > 0, y, 0.1 * y)
    cat = np.concatenate([bilinear_half_pixel(y, 8, 8), bilinear_half_pixel(maxpool_pad1(x), 8, 8)], -1)
    flat = (1 / (1 + np.exp(-cat))).transpose(0, 3, 1, 2).reshape(1, 7, -1)
    return flat[:, :3], flat[:, 3:]


def run_onnx(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


def test_tiny_graph_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    weights = write_tiny_graph(tmp_path, rng)
    graph = load_graph(tmp_path / "model.json")
    # de-quantization: float16 filter and uint8 affine bias come back as float32 values
    np.testing.assert_allclose(graph.weights["bias"], weights["bias"], rtol=0, atol=1e-6)
    assert graph.weights["filter"].dtype == np.float32
    model = to_onnx(graph, (1, 3, 8, 8), {"out_a": "a", "out_b": "b"})
    ops = [n.op_type for n in model.graph.node]
    assert "SparseToDense" not in ops and ops.count("Conv") == 1
    x = rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    a, b = run_onnx(model, x)
    ra, rb = reference(x, weights)
    assert a.shape == (1, 3, 64) and b.shape == (1, 4, 64)
    np.testing.assert_allclose(a, ra, atol=1e-5)
    np.testing.assert_allclose(b, rb, atol=1e-5)


def test_bias_folds_into_conv_and_transposes_cancel(tmp_path):
    write_tiny_graph(tmp_path, np.random.default_rng(1))
    model = to_onnx(load_graph(tmp_path / "model.json"), (1, 3, 8, 8))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][0]
    assert len(conv.input) == 3  # weight + the folded bias
    # the model's own NCHW->NHWC transpose and the converter's NHWC->NCHW one around the conv cancel
    assert not [n for n in model.graph.node if n.op_type == "Add"]


def test_unsupported_op_is_named(tmp_path):
    extra = [_node("weird", "Erf", ["out_a"])]
    write_tiny_graph(tmp_path, np.random.default_rng(2), extra)
    doc = json.loads((tmp_path / "model.json").read_text())
    doc["signature"]["outputs"] = {"weird:0": {}}
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(TfjsError, match="TF op Erf .*not supported"):
        to_onnx(load_graph(tmp_path / "model.json"), (1, 3, 8, 8))


def test_truncated_weights_are_reported(tmp_path):
    write_tiny_graph(tmp_path, np.random.default_rng(3))
    shard = tmp_path / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes() + b"\0\0\0\0")
    with pytest.raises(TfjsError, match="manifest describes"):
        load_graph(tmp_path / "model.json")


def test_not_a_graph_model(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"format": "layers-model", "modelTopology": {}}))
    with pytest.raises(TfjsError, match="not a TF.js graph model"):
        load_graph(tmp_path / "model.json")
