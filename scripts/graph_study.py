"""What the studies of one exported graph share: the graph (``--model``, default the shipped one) and the split it
was trained on (the group split of ``--data``, seed 0, 10%: the shipped model's)."""

from __future__ import annotations

import argparse

from brisc.data import Splits, default_data_root, discover, make_splits
from brisc.inference.session import ModelSession, open_session


def study_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--model", default=None, help="an exported graph (default: the shipped one)")
    ap.add_argument("--data", default=str(default_data_root()), help="the BRISC train split [default: %(default)s]")
    return ap


def graph_and_split(a: argparse.Namespace) -> tuple[ModelSession, Splits]:
    return open_session(a.model), make_splits(discover(a.data))
