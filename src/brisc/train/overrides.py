"""`--set MODEL.KEY=VALUE`: change one field of a preset's model or training config from the command line.

``vit.depth=8`` sets ``ViTConfig.depth``; ``vit.lr=5e-4`` sets ``TrainConfig.lr``; ``vit.augment.rotation=5`` sets a
field of the nested ``AugmentConfig``. The model and training configs share no field names, so one key names one field.
Values are parsed by the type of the field's declared default: ``0.8,1.2`` for a tuple, ``true``/``false`` for a bool.
Pure functions on dataclasses: no torch.
"""

from __future__ import annotations

from brisc.errors import BriscError

import dataclasses
from typing import Any


class OverrideError(BriscError, ValueError):
    """A --set item that names no field or holds a value of the wrong type."""


def parse_item(item: str) -> tuple[str, str, str]:
    """``"vit.augment.rotation=5"`` -> ``("vit", "augment.rotation", "5")``."""
    key, eq, value = item.partition("=")
    kind, dot, field = key.strip().partition(".")
    if not eq or not dot or not field or not value.strip():
        raise OverrideError(f"--set '{item}': expected MODEL.KEY=VALUE, e.g. vit.depth=8 or vit.augment.rotation=5")
    return kind, field, value.strip()


def _coerce(current: Any, value: str, name: str, variadic: bool = False) -> Any:
    """Parse ``value`` as the type of ``current`` (the field's declared default, so 15 in a preset stays a float)."""
    try:
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if isinstance(current, tuple):
            parts = [v.strip() for v in value.split(",")]
            if variadic:  # tuple[int, ...]: any length, each like the first
                return tuple(_coerce(current[0], v, name) for v in parts)
            return tuple(_coerce(c, v, name) for c, v in zip(current, parts, strict=True))
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, str):
            return value
    except ValueError:
        want = f"{len(current)} comma-separated numbers" if isinstance(current, tuple) else type(current).__name__
        raise OverrideError(f"--set {name}={value}: expected {want} (now {current!r})") from None
    raise OverrideError(f"--set {name}: a {type(current).__name__} cannot be set from the command line")


def _set(obj: Any, path: str, value: str, name: str) -> Any:
    head, _, rest = path.partition(".")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if head not in fields:
        raise OverrideError(f"--set {name}: no field '{head}' (choose from {', '.join(sorted(fields))})")
    current, declared = getattr(obj, head), fields[head]
    if rest:
        if not dataclasses.is_dataclass(current):
            raise OverrideError(f"--set {name}: '{head}' has no fields")
        new = _set(current, rest, value, name)
    else:
        if dataclasses.is_dataclass(current):
            raise OverrideError(f"--set {name}: '{head}' is a group; set one of its fields, e.g. {name}.FIELD=VALUE")
        default = current if declared.default is dataclasses.MISSING else declared.default
        new = _coerce(default, value, name, variadic="..." in str(declared.type))
    return dataclasses.replace(obj, **{head: new})


def apply_overrides(kind: str, model_cfg: Any, train_cfg: Any, items: list[tuple[str, str, str]]) -> tuple[Any, Any]:
    """Apply the parsed items for ``kind`` to its model config (if it has one) and its training config."""
    model_fields = {f.name for f in dataclasses.fields(model_cfg)} if model_cfg is not None else set()
    train_fields = {f.name for f in dataclasses.fields(train_cfg)}
    for item_kind, path, value in items:
        if item_kind != kind:
            continue
        name, head = f"{kind}.{path}", path.partition(".")[0]
        if head in model_fields:
            model_cfg = _set(model_cfg, path, value, name)
        elif head in train_fields:
            train_cfg = _set(train_cfg, path, value, name)
        else:
            known = ", ".join(sorted(model_fields | train_fields))
            raise OverrideError(f"--set {name}: no field '{head}' for {kind} (choose from {known})")
    return model_cfg, train_cfg
