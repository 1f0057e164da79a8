"""Model loading and inference: `card` (the model card and file), `onnx` (our detector: preprocessing,
decoding, `OnnxDetector`), `tflite` and `eim` (Edge Impulse's formats), `resize` (the studio's resize modes),
`loader.load_detector` (the backend by the card's format) and `eim_build` (package a model as an `.eim`)."""
