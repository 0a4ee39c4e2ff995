"""Atomic writes: every file brisc writes appears whole or not at all (temporary name, then rename). Torch-free."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


# The process's umask, read once at import (os.umask can only be read by setting it, which is not thread-safe).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def tmp_path(path: str | os.PathLike) -> Path:
    """A hidden sibling of ``path`` to write first; ``os.replace`` then publishes it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def is_tmp_name(name: str) -> bool:
    """A name ``tmp_path`` makes (a killed writer's leftover, once no writer is live)."""
    return name.startswith(".") and name.rpartition(".tmp")[2].isdigit()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the temporary sibling to write; it replaces ``path`` when the block ends, and is removed if it raises."""
    tmp = tmp_path(path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers (safetensors, torch.save) create files 0600: publish them 0644
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def walk_files(top: str | os.PathLike, *, recursive: bool = True, prune=None, onerror=None) -> Iterator[Path]:
    """Every entry under ``top`` that is not a folder, by name, folders after the files beside them. Linked folders are
    followed, each real folder once (a link loop ends there). ``prune(folder)`` true skips a folder; ``onerror(folder,
    OSError)`` hears of one that cannot be listed (default: skipped silently). brisc-infer and brisc-train walk alike."""
    seen: set[str] = set()

    def walk(folder: Path) -> Iterator[Path]:
        real = os.path.realpath(folder)
        if real in seen or (prune is not None and prune(folder)):
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            if onerror is not None:
                onerror(folder, e)
            return
        subdirs = []
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            (subdirs if is_dir else []).append(Path(e.path))
            if not is_dir:
                yield Path(e.path)
        if recursive:
            for d in subdirs:
                yield from walk(d)

    yield from walk(Path(top))


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM as an exception: ``finally`` blocks run (temporary files removed), callers report it and
    exit 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def raise_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, ``timeout``, a scheduler, torchrun) into ``Interrupted``; by default it ends the process
    at once and leaves a half-written temporary file behind."""

    def terminate(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, terminate)


def interrupted(prog: str, e: KeyboardInterrupt, kept: str) -> int:
    """Report a Ctrl-C or SIGTERM of a resumable run in one line, ``kept`` saying what was saved where;
    -> its exit code (128 + signum)."""
    signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
    print(f"{prog}: interrupted ({signal.Signals(signum).name}); {kept} (continue with --resume)", file=sys.stderr)
    return 128 + signum


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(obj):
    """NaN and infinities -> None (JSON has no NaN; a bare NaN breaks strict readers), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_npy_atomic(path: str | os.PathLike, arr) -> None:
    """One numpy array as .npy (numpy is imported only here: the rest of this module is stdlib)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(arr))


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Strict JSON: NaN is written as null."""
    text = json.dumps(json_safe(obj), indent=2, default=float, allow_nan=False)
    write_text_atomic(path, text + "\n")
