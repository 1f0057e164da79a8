"""The shape rules of docs/architecture.md that import-linter does not check: no module in helpers/ over 600 lines.

    python tools/check_shape.py          # exit 1 and name each offender

`make lint` runs it beside `lint-imports` (the layer and circle contracts in pyproject.toml) and
`ruff check`; `make test` runs `make lint` first, so CI does too.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def oversized(root: Path = ROOT / "helpers", limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """(path relative to the repository, line count) of every module in `root` over `limit` lines."""
    out = []
    for path in sorted(root.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append((str(path.relative_to(ROOT)), n))
    return out


def main() -> int:
    bad = oversized()
    for path, n in bad:
        print(f"{path}: {n} lines, over the {MAX_LINES}-line limit: split it by job (docs/architecture.md)")
    if not bad:
        print(f"every module in helpers/ is within {MAX_LINES} lines")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
