"""Small file helpers the layouts share: JSON in, atomic text out, images by stem, tidy numbers."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from helpers.datasets.model import IMAGE_EXTENSIONS
from helpers.errors import DatasetError


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); fix or remove the file") from None



def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)



def images_by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                out.setdefault(p.stem, p)
                out.setdefault(p.name, p)
    return out



def json_number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 3)
