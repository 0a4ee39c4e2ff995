"""Atomic writes: every file brisc writes appears whole or not at all (temporary name, then rename). Torch-free."""

from __future__ import annotations

import json
import os
from pathlib import Path


def tmp_path(path: str | os.PathLike) -> Path:
    """A hidden sibling of ``path`` to write first; ``os.replace`` then publishes it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    tmp = tmp_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=float) + "\n")
