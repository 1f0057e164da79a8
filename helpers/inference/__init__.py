"""Model loading and inference in one place: the card, the ONNX / TFLite / .eim backends, decoding."""
