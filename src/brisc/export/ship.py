"""Ship an exported model as brisc-infer's default (package data, at most 25 MB).

    python -m brisc.export.ship artifacts/export/brisc-cpu/vit.int8.onnx
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from brisc.sidecar import read_sidecar, write_sidecar

MAX_BYTES = 25 * 1024 * 1024


def ship_default(model: Path, dest_dir: Path | None = None) -> Path:
    from brisc.inference.session import DEFAULT_MODEL

    meta = read_sidecar(model)  # only a verified model is shipped
    if model.stat().st_size > MAX_BYTES:
        raise ValueError(f"{model}: {model.stat().st_size / 1e6:.1f} MB is over the 25 MB limit for package data")
    dest = (dest_dir / DEFAULT_MODEL.name) if dest_dir else DEFAULT_MODEL
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(model, tmp)
    tmp.replace(dest)
    write_sidecar(dest, {k: v for k, v in meta.items() if k not in ("format_version", "model_file", "model_sha256")}
                  | {"shipped_from": model.name})
    return dest


if __name__ == "__main__":
    out = ship_default(Path(sys.argv[1]))
    print(f"shipped {sys.argv[1]} as {out}")
