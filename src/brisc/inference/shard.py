"""Sharding without an engine: ``--shard I/N`` takes a fixed 1/N of the files, chosen by path (not by the order of
listing), so N processes on N machines (a Slurm array) each classify their part into their own --out, and
``brisc-infer merge`` joins the parts (``brisc.inference.merge``)."""

from __future__ import annotations

import zlib

from brisc.inference.inputs import Collected
from brisc.inference.session import InferenceError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"2/3" -> (2, 3): the second of three parts (1-based, as Slurm's --array=1-3 counts)."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InferenceError(f"--shard {text}: expected I/N, e.g. 2/3 (the second of three parts)") from None
    if not 1 <= i <= n:
        raise InferenceError(f"--shard {text}: I must be between 1 and N")
    return i, n


def shard_of(rel: str, count: int) -> int:
    """The part (1..count) a file belongs to, from its path relative to the input root: every frame of a file
    goes to the same part, and the same tree gives the same parts on any machine."""
    return zlib.crc32(rel.encode("utf-8", "surrogateescape")) % count + 1


def _file_of(key: str) -> str:
    """A skipped or failed entry's file: a volume's slice "x.nii.gz#frame0003" goes with x.nii.gz."""
    head, sep, tail = key.rpartition("#frame")
    return head if sep and tail.isdigit() else key


def select(col: Collected, shard: tuple[int, int] | None) -> Collected:
    """The files, errors and skipped files of one part (all of them without a shard)."""
    if shard is None:
        return col
    i, n = shard
    mine = lambda key: shard_of(_file_of(key), n) == i  # noqa: E731
    return Collected(items=[it for it in col.items if mine(it.rel)], errors=[e for e in col.errors if mine(e[0])],
                     skipped=[s for s in col.skipped if mine(s[0])], duplicates=col.duplicates, root=col.root)
