"""The `.eim` carries OnnxDetector's code: every helpers module it imports must be in RUNTIME_MODULES."""
import ast

from helpers.inference.eim_build import HELPERS, RUNTIME_MODULES


def _helpers_imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("helpers"))


def test_runtime_modules_hold_everything_the_detector_imports():
    packed = set(RUNTIME_MODULES)
    for name in RUNTIME_MODULES:
        assert (HELPERS / name).is_file(), name
        for module in _helpers_imports(HELPERS / name):
            rel = module.split(".", 1)[1].replace(".", "/") if "." in module else ""
            assert f"{rel}.py" in packed or f"{rel}/__init__.py" in packed, f"{name} imports {module}, not packed in the .eim"
    assert "inference/onnx.py" in packed
