"""A real Edge Impulse-layout FOMO `.tflite` file, written with LiteRT's own flatbuffer schema.

No TensorFlow here: the graph is built with `ai_edge_litert.schema_py_generated`'s object API
and packed with `flatbuffers`, then run by LiteRT's interpreter like any exported model.

Graph (Edge Impulse's FOMO contract: NHWC input scaled 0..1, output (1, H/8, W/8, C+1) softmax
with the background in channel 0):
    input (1, S, S, 3) -> AVERAGE_POOL_2D 8x8/8 -> CONV_2D 1x1 -> SOFTMAX -> output (1, S/8, S/8, 2)
Label "apple" scores `10 * (r - g - b)` against a background logit of 2: a red patch lights
its cells, grey or black does not. `quantized=True` adds int8 QUANTIZE/DEQUANTIZE at both ends,
as Edge Impulse's int8 exports take and give int8 tensors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

W_APPLE = np.array([10.0, -10.0, -10.0], np.float32)
BACKGROUND_BIAS = 2.0
IN_SCALE, IN_ZERO = 1.0 / 255.0, -128
OUT_SCALE, OUT_ZERO = 1.0 / 256.0, -128


def numpy_forward(x01: np.ndarray) -> np.ndarray:
    """The same graph in numpy: (S, S, 3) pixels in 0..1 -> (S/8, S/8, 2) probabilities."""
    s = x01.shape[0] // 8
    pooled = x01.reshape(s, 8, s, 8, 3).mean(axis=(1, 3))
    logits = np.stack([np.full((s, s), BACKGROUND_BIAS, np.float32), pooled @ W_APPLE], axis=-1)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def write_fomo_tflite(path: Path, size: int = 96, quantized: bool = False) -> Path:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    grid = size // 8
    buffers = [s.BufferT()]  # buffer 0: the empty sentinel every model starts with
    tensors: list = []

    def tensor(name: str, shape: list[int], ttype: int = s.TensorType.FLOAT32, data: np.ndarray | None = None,
               quant: tuple[float, int] | None = None) -> int:
        t = s.TensorT()
        t.name, t.shape, t.type = name.encode(), list(shape), ttype
        t.buffer = 0
        if data is not None:
            b = s.BufferT()
            b.data = list(np.ascontiguousarray(data).tobytes())
            buffers.append(b)
            t.buffer = len(buffers) - 1
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    op_codes: list[int] = []

    def code(builtin: int) -> int:
        if builtin not in op_codes:
            op_codes.append(builtin)
        return op_codes.index(builtin)

    ops = []

    def op(builtin: int, inputs: list[int], outputs: list[int], opt_type: int = 0, options=None) -> None:
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code(builtin), inputs, outputs
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = opt_type, options
        ops.append(o)

    B = s.BuiltinOperator
    if quantized:
        x_in = tensor("input", [1, size, size, 3], s.TensorType.INT8, quant=(IN_SCALE, IN_ZERO))
        x = tensor("input_f", [1, size, size, 3])
        op(B.DEQUANTIZE, [x_in], [x])
    else:
        x_in = x = tensor("input", [1, size, size, 3])
    pooled = tensor("pooled", [1, grid, grid, 3])
    pool = s.Pool2DOptionsT()
    pool.padding, pool.strideW, pool.strideH, pool.filterWidth, pool.filterHeight = s.Padding.VALID, 8, 8, 8, 8
    op(B.AVERAGE_POOL_2D, [x], [pooled], s.BuiltinOptions.Pool2DOptions, pool)
    weights = np.stack([np.zeros(3, np.float32), W_APPLE]).reshape(2, 1, 1, 3)  # OHWI
    w = tensor("w", [2, 1, 1, 3], data=weights)
    b = tensor("b", [2], data=np.array([BACKGROUND_BIAS, 0.0], np.float32))
    logits = tensor("logits", [1, grid, grid, 2])
    conv = s.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = s.Padding.VALID, 1, 1
    conv.dilationWFactor = conv.dilationHFactor = 1
    op(B.CONV_2D, [pooled, w, b], [logits], s.BuiltinOptions.Conv2DOptions, conv)
    probs = tensor("probs" if quantized else "output", [1, grid, grid, 2])
    sm = s.SoftmaxOptionsT()
    sm.beta = 1.0
    op(B.SOFTMAX, [logits], [probs], s.BuiltinOptions.SoftmaxOptions, sm)
    if quantized:
        out = tensor("output", [1, grid, grid, 2], s.TensorType.INT8, quant=(OUT_SCALE, OUT_ZERO))
        op(B.QUANTIZE, [probs], [out])
    else:
        out = probs

    sub = s.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = tensors, [x_in], [out], ops, b"main"
    model = s.ModelT()
    model.version, model.description = 3, b"edgeloop test FOMO"
    model.subgraphs, model.buffers = [sub], buffers
    codes = []
    for builtin in op_codes:
        c = s.OperatorCodeT()
        c.builtinCode, c.version = builtin, 1
        c.deprecatedBuiltinCode = builtin if builtin < 127 else 127
        codes.append(c)
    model.operatorCodes = codes
    fb = flatbuffers.Builder(1024)
    fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(fb.Output()))
    return path
