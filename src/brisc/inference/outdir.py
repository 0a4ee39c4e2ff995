"""The --out folder of brisc-infer: claimed with a marker, locked against a second process, never someone else's.

Rules (each refusal is an ``InferenceError``: one line, exit 2, nothing touched):
- a new or empty folder is claimed: ``.brisc-infer`` (a small JSON marker) is written first;
- a folder with the marker holds an earlier run: it is continued with ``--resume`` or started over with
  ``--overwrite`` (brisc's own files only), and refused with neither;
- any other non-empty folder, or a path that is a file, is refused: it is not brisc's to write into;
- while a run works in the folder it holds an exclusive lock on ``.brisc-infer.lock`` (released by the
  kernel however the process ends), so a second process on the same folder refuses and names the holder;
- temporaries left by a killed run (``.<name>.tmp<PID>``, see ``brisc.fsio``) are removed once the lock is held.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from brisc import CLASSES
from brisc.fsio import is_tmp_name
from brisc.inference.session import InferenceError

MARKER = ".brisc-infer"
LOCK = ".brisc-infer.lock"
# The output folder's contract: every file and folder brisc-infer writes under --out (and --overwrite removes).
PREDICTIONS_JSONL, PREDICTIONS_CSV, ERRORS_CSV, SKIPPED_CSV = ("predictions.jsonl", "predictions.csv", "errors.csv",
                                                               "skipped.csv")
SUMMARY_JSON, GALLERY_HTML = "summary.json", "index.html"
VOLUMES_CSV, VOLUMES_JSONL = "volumes.csv", "volumes.jsonl"  # one row per NIfTI volume or DICOM series
OWN_FILES = (PREDICTIONS_JSONL, PREDICTIONS_CSV, ERRORS_CSV, SKIPPED_CSV, SUMMARY_JSON, GALLERY_HTML, VOLUMES_CSV,
             VOLUMES_JSONL)
HEATMAPS, VOLUMES = "heatmaps", "volumes"  # VOLUMES: the contact sheets
# "thumbnails": where older brisc-infer wrote a JPEG a scan beside the overlay; --overwrite clears it too.
OWN_FOLDERS = (HEATMAPS, VOLUMES, "thumbnails")

# The columns of predictions.csv (predictions.jsonl rows hold the same, with the probabilities as one dict).
ROW_FIELDS = ["path", "frame", "volume", "predicted", "probability", *(f"p_{c}" for c in CLASSES),
              "ood_score", "in_distribution", "true_label", "correct", "explain", "mask", "pointing_hit", "pointing_chance", "energy_in_mask", "mask_area",
              "deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random", "heatmap", "panel", "map",
              "model", "model_sha256", "provider", "input_sha256", "time"]
MEASURED = ("mask", "pointing_hit", "pointing_chance", "energy_in_mask", "mask_area", "deletion_auc", "insertion_auc",
            "deletion_auc_random", "insertion_auc_random", "heatmap", "panel", "map")


def new_row(*, path: str, frame: int | None, volume: str | None, probabilities: dict[str, float],
            ood_score: float | None, in_distribution: bool | None, true_label: str | None, explain: str | None,
            model: str, model_sha256: str, provider: str, input_sha256: str | None, time: str) -> dict:
    """One scan's row with every field of ``ROW_FIELDS`` (the probabilities as one dict); the mask figures and the
    files drawn (``MEASURED``) are None until they are."""
    predicted = max(probabilities, key=probabilities.get)
    return {"path": path, "frame": frame, "volume": volume, "predicted": predicted,
            "probability": probabilities[predicted], "probabilities": probabilities, "ood_score": ood_score,
            "in_distribution": in_distribution, "true_label": true_label,
            "correct": (true_label == predicted) if true_label else None, "explain": explain,
            **dict.fromkeys(MEASURED), "model": model, "model_sha256": model_sha256, "provider": provider,
            "input_sha256": input_sha256, "time": time}


@dataclass(frozen=True)
class OutFolder:
    """One brisc-infer output folder, for every reader (merge, gallery, benchmarks, scripts, tests): its files by
    role, and its record read back. The writers (``outputs.Writer``, the runner) name the same files, and build
    its rows with ``new_row`` (``ROW_FIELDS``), both below."""

    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_JSONL

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_JSON

    def rows(self) -> list[dict]:
        """predictions.jsonl's rows in order, whole lines only (a killed run's torn last line is not a row)."""
        return read_rows(self.predictions)[0]

    def summary(self) -> dict:
        """summary.json ({} when the run never finished writing it)."""
        try:
            d = json.loads(self.summary_path.read_text(encoding="utf-8"))
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    def table(self, name: str) -> list[tuple[str, str]]:
        """(path, reason) rows of errors.csv or skipped.csv ([] when absent)."""
        try:
            with open(self.path / name, newline="", encoding="utf-8") as f:
                return [(r[0], r[1]) for r in list(csv.reader(f))[1:] if len(r) >= 2]
        except OSError:
            return []


def read_rows(jsonl: Path) -> tuple[list[dict], int]:
    """The rows of a predictions.jsonl and the byte length of its whole lines (a torn last line ends the rows)."""
    try:
        data = jsonl.read_bytes()
    except FileNotFoundError:
        return [], 0
    rows, end = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        end += len(line)
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "path" in row and "frame" in row:
            rows.append(row)
    return rows, end


def is_brisc_output(folder: Path) -> bool:
    """The marker, or (outputs of brisc-infer versions before the marker) a predictions.jsonl of brisc rows."""
    try:
        if (folder / MARKER).is_file():
            return True
        with open(folder / PREDICTIONS_JSONL, encoding="utf-8") as f:
            return "model_sha256" in json.loads(f.readline())
    except (OSError, ValueError, TypeError):
        return False


def check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an --out that is not brisc's to write into (see the module's rules); touches nothing."""
    if resume and overwrite:
        raise InferenceError("--resume and --overwrite contradict each other: choose one")
    if out.exists() and not out.is_dir():
        raise InferenceError(f"{out}: --out is an existing file, not a folder")
    if not out.is_dir():
        return
    try:
        entries = [e for e in os.listdir(out) if e != LOCK]
    except OSError as e:
        raise InferenceError(f"{out}: cannot read the --out folder ({e.strerror})") from None
    if not entries:
        return
    if not is_brisc_output(out):
        raise InferenceError(f"{out}: --out is a folder with other files in it, not a brisc-infer output "
                             f"(no {MARKER} marker): choose a new or empty folder")
    if not (resume or overwrite):
        raise InferenceError(f"{out} already holds a brisc-infer run: pass --resume to continue it or "
                             "--overwrite to start over")


def marker(out: Path) -> dict:
    """The marker's record ({} when absent or unreadable): when the folder was claimed, and the input root."""
    try:
        d = json.loads((out / MARKER).read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def previous_rows_model(out: Path) -> tuple[str | None, str | None]:
    """(model_sha256, explain) of the first row already in ``out`` (None, None without one)."""
    try:
        with open(out / PREDICTIONS_JSONL, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    return row.get("model_sha256"), row.get("explain")
                except ValueError:
                    continue
    except OSError:
        pass
    return None, None


def clear_outputs(out: Path) -> None:
    """--overwrite: remove brisc-infer's own files and folders (``OWN_FILES``, ``OWN_FOLDERS``), nothing else."""
    import shutil

    for name in OWN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in OWN_FOLDERS:
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)


class OutLock:
    """Create/claim ``out`` and hold its lock for the run (a context manager). ``root`` (the input root) and
    ``shard`` (I, N) go into a new marker; ``overwrite`` clears the earlier run's outputs once the lock is held."""

    def __init__(self, out: Path, *, root: str = "", overwrite: bool = False, shard: tuple[int, int] | None = None):
        self.out, self.root, self.overwrite, self.shard = out, root, overwrite, shard
        self._fd: int | None = None

    def __enter__(self) -> "OutLock":
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InferenceError(f"{self.out}: cannot write the --out folder ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise InferenceError(f"{self.out} is in use by brisc-infer process {holder}: wait for it to finish, "
                                 "or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        try:
            if self.overwrite:
                clear_outputs(self.out)
            if self.overwrite or not is_brisc_output(self.out) or "root" not in marker(self.out):
                (self.out / MARKER).write_text(json.dumps(
                    {"tool": "brisc-infer", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "root": self.root, "shard": list(self.shard) if self.shard else None}) + "\n")
            remove_stale_temporaries(self.out)
        except OSError as e:
            self.__exit__()
            raise InferenceError(f"{self.out}: cannot write the --out folder ({e.strerror})") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def remove_stale_temporaries(out: Path) -> int:
    """Delete ``.<name>.tmp<PID>`` files under ``out`` (only called while holding the lock, so none is live)."""
    n = 0
    for dirpath, _, files in os.walk(out):
        for name in files:
            if is_tmp_name(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except OSError:
                    pass
    return n
