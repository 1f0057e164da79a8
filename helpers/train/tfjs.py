"""TF.js graph models -> ONNX, with numpy and onnx only (no TensorFlow).

A TF.js graph model is `model.json` (a TensorFlow GraphDef as JSON plus a weights manifest)
and one or more `.bin` shards holding the weights back to back, some of them quantized
(float16, or uint8/uint16 with a scale and minimum). `load_graph` reads both and de-quantizes;
`to_onnx` maps each TensorFlow op to ONNX. Constant sub-graphs (shape arithmetic the
TensorFlow converter left behind, such as `SparseToDense` building a `Reshape` target) are
folded with numpy before mapping, so the ONNX graph holds only the network.

TensorFlow convolutions are NHWC; the ONNX graph keeps the model's own `Transpose` nodes and
wraps each convolution in NHWC<->NCHW transposes, and `_cancel_transposes` removes the pairs
that undo each other, so the result runs as fast as a native NCHW export.

Supported ops: the ones NanoDet and similar convolutional detectors use (see `_EMIT`); any
other op raises `TfjsError` naming it.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers.errors import ModelError

ONNX_OPSET = 17


class TfjsError(ModelError):
    """The TF.js files cannot be read or hold an op this converter does not map."""


_TF_DTYPES = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_INT64": np.int64, "DT_BOOL": np.bool_}
_MANIFEST_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    attr: dict[str, Any]


@dataclass
class TfjsGraph:
    """The graph's nodes in file order, its de-quantized weights by node name, and its signature."""

    nodes: list[Node]
    weights: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise TfjsError(f"no node named {name!r} in the graph")


def _attr_value(v: dict[str, Any]) -> Any:
    """A GraphDef AttrValue (JSON form) as a Python value."""
    if "s" in v:
        return base64.b64decode(v["s"]).decode("utf-8", "replace")
    if "i" in v:
        return int(v["i"])
    if "f" in v:
        return float(v["f"])
    if "b" in v:
        return bool(v["b"])
    if "type" in v:
        return v["type"]
    if "list" in v:
        lst = v["list"]
        if "i" in lst:
            return [int(x) for x in lst["i"]]
        if "f" in lst:
            return [float(x) for x in lst["f"]]
        if "s" in lst:
            return [base64.b64decode(x).decode() for x in lst["s"]]
        return []
    return None


def read_weights(manifest: list[dict[str, Any]], folder: Path) -> dict[str, np.ndarray]:
    """De-quantized float32/int32 arrays by weight name, from the manifest's `.bin` shards."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b""
        for p in group["paths"]:
            f = folder / p
            if not f.is_file():
                raise TfjsError(f"weights shard {f} named in the manifest is missing")
            data += f.read_bytes()
        offset = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if w["dtype"] not in _MANIFEST_DTYPES:
                raise TfjsError(f"weight {w['name']} has dtype {w['dtype']!r}; supported: {sorted(_MANIFEST_DTYPES)}")
            if q:
                if q["dtype"] not in _QUANT_DTYPES:
                    raise TfjsError(f"weight {w['name']} is quantized as {q['dtype']!r}; supported: {sorted(_QUANT_DTYPES)}")
                qdt = np.dtype(_QUANT_DTYPES[q["dtype"]]).newbyteorder("<")
                raw = np.frombuffer(data, qdt, count, offset)
                offset += count * qdt.itemsize
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                else:  # affine: value = q * scale + min
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                arr = arr.astype(_MANIFEST_DTYPES[w["dtype"]])
            else:
                dt = np.dtype(_MANIFEST_DTYPES[w["dtype"]]).newbyteorder("<")
                arr = np.frombuffer(data, dt, count, offset).copy()
                offset += count * dt.itemsize
            out[w["name"]] = arr.reshape(shape)
        if offset != len(data):
            raise TfjsError(f"weights shards {group['paths']} hold {len(data)} bytes but the manifest describes {offset}")
    return out


def load_graph(json_path: str | Path) -> TfjsGraph:
    """Read a TF.js graph model (`model.json` + its `.bin` shards beside it).

    Raises:
        TfjsError: not a graph model, or a shard is missing or of the wrong size.
    """
    path = Path(json_path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TfjsError(f"cannot read TF.js model {path}: {e}") from e
    if doc.get("format") != "graph-model" or "modelTopology" not in doc:
        raise TfjsError(f"{path} is not a TF.js graph model (format={doc.get('format')!r})")
    nodes = []
    for n in doc["modelTopology"].get("node", []):
        attr = {k: _attr_value(v) for k, v in n.get("attr", {}).items()}
        inputs = [i for i in n.get("input", []) if not i.startswith("^")]  # drop control deps
        nodes.append(Node(n["name"], n["op"], inputs, attr))
    weights = read_weights(doc.get("weightsManifest", []), path.parent)
    sig = doc.get("signature") or {}
    ins = [k.split(":")[0] for k in (sig.get("inputs") or {})] or [n.name for n in nodes if n.op == "Placeholder"]
    outs = [k.split(":")[0] for k in (sig.get("outputs") or {})]
    return TfjsGraph(nodes, weights, ins, outs, {k: doc.get(k) for k in ("generatedBy", "convertedBy")})


# ----------------------------------------------------------------------------- constant folding
def _ref(name: str) -> tuple[str, int]:
    """'node:1' -> ('node', 1); 'node' -> ('node', 0)."""
    base, _, idx = name.partition(":")
    return base, int(idx) if idx else 0


def _fold_sparse_to_dense(idx, shape, values, default):
    out = np.full(np.asarray(shape).astype(np.int64), default, dtype=np.asarray(values).dtype)
    idx = np.asarray(idx).astype(np.int64)
    if idx.ndim == 0:
        idx = idx.reshape(1, 1)
    elif idx.ndim == 1:
        idx = idx.reshape(-1, 1) if out.ndim == 1 else idx.reshape(1, -1)
    vals = np.broadcast_to(np.asarray(values), (len(idx),))
    for i, v in zip(idx, vals):
        out[tuple(i)] = v
    return out


_FOLD: dict[str, Callable[..., Any]] = {
    "Identity": lambda n, x: x,
    "Add": lambda n, a, b: a + b,
    "AddV2": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "Cast": lambda n, x: x.astype(_TF_DTYPES.get(n.attr.get("DstT"), np.float32)),
    "Reshape": lambda n, x, s: x.reshape(np.asarray(s).astype(np.int64)),
    "Transpose": lambda n, x, p: np.transpose(x, np.asarray(p).astype(np.int64)),
    "ConcatV2": lambda n, *xs: np.concatenate(xs[:-1], axis=int(xs[-1])),
    "Pack": lambda n, *xs: np.stack(xs, axis=int(n.attr.get("axis", 0))),
    "SparseToDense": lambda n, i, s, v, d: _fold_sparse_to_dense(i, s, v, d),
}


def fold_constants(graph: TfjsGraph) -> dict[str, np.ndarray]:
    """Values of every node computable without the input (weights plus folded arithmetic)."""
    consts: dict[str, np.ndarray] = {}
    for n in graph.nodes:
        if n.op == "Const":
            if n.name not in graph.weights:
                raise TfjsError(f"constant {n.name} has no entry in the weights manifest")
            consts[n.name] = graph.weights[n.name]
    changed = True
    while changed:
        changed = False
        for n in graph.nodes:
            if n.name in consts or n.op not in _FOLD or not n.inputs:
                continue
            refs = [_ref(i) for i in n.inputs]
            if all(b in consts and k == 0 for b, k in refs):
                consts[n.name] = np.asarray(_FOLD[n.op](n, *[consts[b] for b, _ in refs]))
                changed = True
    return consts


# ----------------------------------------------------------------------------- ONNX emission
class _Builder:
    def __init__(self, consts: dict[str, np.ndarray]):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.consts = consts
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self.counter = 0
        self.bias: dict[str, tuple[str, np.ndarray]] = {}  # conv node -> (its bias Add's output, bias)

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        self.counter += 1
        name = f"{hint}__{self.counter}"
        self.initializers[name] = self.numpy_helper.from_array(np.asarray(value), name)
        return name

    def tensor(self, ref: str) -> str:
        """The ONNX name of a TF input reference; constants become initializers on first use."""
        base, idx = _ref(ref)
        if base in self.consts:
            if idx:
                raise TfjsError(f"constant {base} has no output {idx}")
            if base not in self.initializers:
                self.initializers[base] = self.numpy_helper.from_array(np.asarray(self.consts[base]), base)
            return base
        return f"{base}:{idx}"

    def value(self, ref: str, what: str) -> np.ndarray:
        base, _ = _ref(ref)
        if base not in self.consts:
            raise TfjsError(f"{what} ({ref}) must be a constant; this converter folds only constant shapes")
        return self.consts[base]

    def add(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.counter += 1
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=f"{op}_{self.counter}", **attrs))


def _nhwc_op(b: _Builder, n: Node, op: str, x: str, extra: list[str], out: str | None = None, **attrs: Any) -> None:
    """Run an NCHW ONNX op on an NHWC TF tensor: transpose in, op, transpose out."""
    t_in, t_op = f"{n.name}/nchw", f"{n.name}/nchw_out"
    b.add("Transpose", [x], [t_in], perm=[0, 3, 1, 2])
    b.add(op, [t_in, *extra], [t_op], **attrs)
    b.add("Transpose", [t_op], [out or f"{n.name}:0"], perm=[0, 2, 3, 1])


def _check_nhwc(n: Node) -> None:
    fmt = n.attr.get("data_format", "NHWC")
    if fmt != "NHWC":
        raise TfjsError(f"{n.op} {n.name} has data_format {fmt}; only NHWC is supported")


def _pads_attr(n: Node, k: tuple[int, int]) -> dict[str, Any]:
    pad = n.attr.get("padding", "VALID")
    if pad == "VALID":
        return {}
    if pad == "SAME":
        return {"auto_pad": "SAME_UPPER"}
    raise TfjsError(f"{n.op} {n.name}: padding {pad!r} is not supported (VALID or SAME)")


def _emit_conv(b: _Builder, n: Node) -> None:
    _check_nhwc(n)
    bias_add = b.bias.get(n.name)
    w = b.value(n.inputs[1], f"{n.name}'s filter")  # HWIO
    strides, dil = n.attr.get("strides", [1, 1, 1, 1]), n.attr.get("dilations", [1, 1, 1, 1])
    if n.op == "DepthwiseConv2dNative":  # HWCM -> (C*M, 1, H, W), one group per input channel
        h, wd, c, m = w.shape
        wt, group = w.transpose(2, 3, 0, 1).reshape(c * m, 1, h, wd), c
    else:
        wt, group = w.transpose(3, 2, 0, 1), 1
    extra = [b.const(wt.astype(np.float32), "W")]
    if bias_add is not None:  # the bias Add that follows folds into the Conv
        extra.append(b.const(bias_add[1].astype(np.float32), "B"))
    _nhwc_op(b, n, "Conv", b.tensor(n.inputs[0]), extra, out=bias_add[0] if bias_add else None,
             kernel_shape=list(wt.shape[2:]), strides=strides[1:3], dilations=dil[1:3], group=group,
             **_pads_attr(n, wt.shape[2:]))


def _emit_pool(b: _Builder, n: Node) -> None:
    _check_nhwc(n)
    k, s = n.attr["ksize"], n.attr["strides"]
    _nhwc_op(b, n, "MaxPool" if n.op == "MaxPool" else "AveragePool", b.tensor(n.inputs[0]), [],
             kernel_shape=k[1:3], strides=s[1:3], **_pads_attr(n, tuple(k[1:3])))


def _emit_pad(b: _Builder, n: Node) -> None:
    p = b.value(n.inputs[1], f"{n.name}'s paddings").astype(np.int64)
    pads = np.concatenate([p[:, 0], p[:, 1]])
    ins = [b.tensor(n.inputs[0]), b.const(pads, "pads")]
    if n.op == "PadV2":
        cv = b.value(n.inputs[2], f"{n.name}'s constant").astype(np.float32).reshape(())
        ins.append(b.const(cv, "padval"))
    b.add("Pad", ins, [f"{n.name}:0"], mode="constant")


def _emit_resize(b: _Builder, n: Node) -> None:
    size = b.value(n.inputs[1], f"{n.name}'s size").astype(np.int64).reshape(2)
    if n.attr.get("align_corners"):
        mode = "align_corners"
    elif n.attr.get("half_pixel_centers"):
        mode = "half_pixel"
    else:
        mode = "asymmetric"
    linear = n.op == "ResizeBilinear"
    # TF's nearest-neighbour with half-pixel centres rounds half up after the shift; ONNX
    # 'round_prefer_ceil' with 'tf_half_pixel_for_nn' reproduces it.
    if not linear and mode == "half_pixel":
        mode = "tf_half_pixel_for_nn"
    # Resize in NCHW with full `sizes` (N and C from the tensor's shape): onnxruntime's layout
    # optimiser mishandles an NHWC Resize with `axes`.
    nchw, nc, sizes = f"{n.name}/nchw", f"{n.name}/nc", f"{n.name}/sizes"
    b.add("Transpose", [b.tensor(n.inputs[0])], [nchw], perm=[0, 3, 1, 2])
    b.add("Shape", [nchw], [nc], start=0, end=2)
    b.add("Concat", [nc, b.const(size, "hw")], [sizes], axis=0)
    b.add("Resize", [nchw, "", "", sizes], [f"{n.name}/nchw_out"],
          mode="linear" if linear else "nearest", coordinate_transformation_mode=mode,
          **({} if linear else {"nearest_mode": "round_prefer_ceil" if "half" in mode else "floor"}))
    b.add("Transpose", [f"{n.name}/nchw_out"], [f"{n.name}:0"], perm=[0, 2, 3, 1])


def _emit_split(b: _Builder, n: Node) -> None:
    sizes = b.value(n.inputs[1], f"{n.name}'s sizes").astype(np.int64).reshape(-1)
    axis = int(b.value(n.inputs[2], f"{n.name}'s axis"))
    if (sizes < 0).any():
        raise TfjsError(f"SplitV {n.name}: an inferred (-1) split size is not supported")
    b.add("Split", [b.tensor(n.inputs[0]), b.const(sizes, "split")], [f"{n.name}:{i}" for i in range(len(sizes))],
          axis=axis)


def _simple(op: str, **attrs: Any) -> Callable[[_Builder, Node], None]:
    def emit(b: _Builder, n: Node) -> None:
        b.add(op, [b.tensor(i) for i in n.inputs], [f"{n.name}:0"], **attrs)
    return emit


def _emit_leaky(b: _Builder, n: Node) -> None:
    b.add("LeakyRelu", [b.tensor(n.inputs[0])], [f"{n.name}:0"], alpha=float(n.attr.get("alpha", 0.2)))


def _emit_concat(b: _Builder, n: Node) -> None:
    axis = int(b.value(n.inputs[-1], f"{n.name}'s axis"))
    b.add("Concat", [b.tensor(i) for i in n.inputs[:-1]], [f"{n.name}:0"], axis=axis)


def _emit_reshape(b: _Builder, n: Node) -> None:
    shape = b.value(n.inputs[1], f"{n.name}'s shape").astype(np.int64)
    b.add("Reshape", [b.tensor(n.inputs[0]), b.const(shape, "shape")], [f"{n.name}:0"])


def _emit_transpose(b: _Builder, n: Node) -> None:
    perm = b.value(n.inputs[1], f"{n.name}'s perm").astype(np.int64).tolist()
    b.add("Transpose", [b.tensor(n.inputs[0])], [f"{n.name}:0"], perm=perm)


def _emit_relu6(b: _Builder, n: Node) -> None:
    b.add("Clip", [b.tensor(n.inputs[0]), b.const(np.float32(0), "lo"), b.const(np.float32(6), "hi")],
          [f"{n.name}:0"])


_EMIT: dict[str, Callable[[_Builder, Node], None]] = {
    "Conv2D": _emit_conv, "DepthwiseConv2dNative": _emit_conv,
    "MaxPool": _emit_pool, "AvgPool": _emit_pool,
    "Pad": _emit_pad, "PadV2": _emit_pad,
    "ResizeBilinear": _emit_resize, "ResizeNearestNeighbor": _emit_resize,
    "SplitV": _emit_split, "ConcatV2": _emit_concat, "Reshape": _emit_reshape, "Transpose": _emit_transpose,
    "LeakyRelu": _emit_leaky, "Relu6": _emit_relu6,
    "Add": _simple("Add"), "AddV2": _simple("Add"), "Sub": _simple("Sub"), "Mul": _simple("Mul"),
    "Sigmoid": _simple("Sigmoid"), "Relu": _simple("Relu"), "Identity": _simple("Identity"),
}


def _cancel_transposes(nodes: list[Any], keep: set[str]) -> list[Any]:
    """Drop Transpose pairs that compose to the identity (NHWC->NCHW->NHWC around convs)."""
    producer = {o: nd for nd in nodes for o in nd.output}
    consumers: dict[str, int] = {}
    for nd in nodes:
        for i in nd.input:
            consumers[i] = consumers.get(i, 0) + 1
    rename: dict[str, str] = {}
    dropped: set[int] = set()

    def perm(nd: Any) -> list[int]:
        return [a.ints for a in nd.attribute if a.name == "perm"][0]

    for nd in nodes:
        if nd.op_type != "Transpose":
            continue
        src = producer.get(nd.input[0])
        if src is None or src.op_type != "Transpose" or nd.output[0] in keep:
            continue
        p1, p2 = list(perm(src)), list(perm(nd))
        if len(p1) == len(p2) and [p1[i] for i in p2] == list(range(len(p1))):
            rename[nd.output[0]] = src.input[0]
            dropped.add(id(nd))
    for nd in nodes:  # follow chains: a renamed input may itself be renamed
        for k, i in enumerate(nd.input):
            while i in rename:
                i = rename[i]
            nd.input[k] = i
    out = [nd for nd in nodes if id(nd) not in dropped]
    used = {i for nd in out for i in nd.input} | keep
    return [nd for nd in out if nd.op_type != "Transpose" or nd.output[0] in used]


def to_onnx(graph: TfjsGraph, input_shape: tuple[int, ...], output_names: dict[str, str] | None = None) -> Any:
    """Convert a TF.js graph to an `onnx.ModelProto` (float32 input named 'input').

    Args:
        graph: from `load_graph`.
        input_shape: the fixed input shape, e.g. (1, 3, 416, 416).
        output_names: TF output node -> ONNX output name; default: the signature's outputs, as named.

    Raises:
        TfjsError: an op this converter does not map, or a non-constant shape argument.
    """
    if len(graph.inputs) != 1:
        raise TfjsError(f"expected one graph input, found {graph.inputs}")
    consts = fold_constants(graph)
    b = _Builder(consts)
    needed = _needed(graph, consts)
    skip = _find_bias_adds(graph, consts, b.bias)
    for n in graph.nodes:
        if n.name not in needed or n.name in consts or n.op == "Placeholder" or n.name in skip:
            continue
        if n.op not in _EMIT:
            raise TfjsError(f"TF op {n.op} (node {n.name}) is not supported by helpers.train.tfjs; "
                            f"supported: {', '.join(sorted(_EMIT))}")
        _EMIT[n.op](b, n)
    names = output_names or {o: o for o in graph.outputs}
    inp = graph.inputs[0]
    finals = []
    for tf_name, onnx_name in names.items():
        b.add("Identity", [f"{tf_name}:0"], [onnx_name])
        finals.append(onnx_name)
    for nd in b.nodes:  # the Placeholder's output is the ONNX input
        for k, i in enumerate(nd.input):
            if i == f"{inp}:0":
                nd.input[k] = "input"
    nodes = _cancel_transposes(b.nodes, set(finals))
    used = {i for nd in nodes for i in nd.input}
    inits = [t for name, t in b.initializers.items() if name in used]
    g = helper.make_graph(nodes, "tfjs", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
                          [helper.make_empty_tensor_value_info(o) for o in finals], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="edgeloop-tfjs")
    model.ir_version = 9
    # Output shapes from ONNX's shape inference (the graph outputs need a typed shape).
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for k, o in enumerate(finals):
        if o in inferred:
            model.graph.output[k].CopyFrom(inferred[o])
    onnx.checker.check_model(model)
    return model


def _find_bias_adds(graph: TfjsGraph, consts: dict[str, np.ndarray],
                    bias: dict[str, tuple[str, np.ndarray]]) -> set[str]:
    """Conv -> Add(1-D constant) pairs whose Add can become the Conv's bias; returns the Adds."""
    uses: dict[str, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            uses[_ref(i)[0]] = uses.get(_ref(i)[0], 0) + 1
    convs = {n.name: n for n in graph.nodes if n.op in ("Conv2D", "DepthwiseConv2dNative")}
    skipped = set()
    for n in graph.nodes:
        if n.op not in ("Add", "AddV2", "BiasAdd") or len(n.inputs) != 2:
            continue
        (a, ka), (c, kc) = (_ref(i) for i in n.inputs)
        if c in convs and a in consts:
            a, c = c, a
        if a in convs and ka == 0 and c in consts and consts[c].ndim == 1 and uses.get(a) == 1:
            bias[a] = (f"{n.name}:0", consts[c])
            skipped.add(n.name)
    return skipped


def _needed(graph: TfjsGraph, consts: dict[str, np.ndarray]) -> set[str]:
    """Nodes the outputs depend on (walking back from the signature's outputs)."""
    by_name = {n.name: n for n in graph.nodes}
    todo = list(graph.outputs)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in consts:
            continue
        node = by_name.get(name)
        if node is None:
            raise TfjsError(f"output {name} is not a node of the graph")
        todo.extend(_ref(i)[0] for i in node.inputs)
    return seen
