"""What one brisc-infer run is asked to do: ``InferOptions``, read by the runner and the writers alike (the CLI
builds it from its options; a test keeps the two in step)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class InferOptions:
    inputs: tuple[str, ...]
    out: Path = Path("brisc-out")
    heatmaps: bool = False
    explain: str = "auto"  # auto | rollout | cls | occlusion
    masks: Path | None = None
    batch_size: int = 32
    recursive: bool = True
    resume: bool = False
    overwrite: bool = False
    panels: bool = False  # with heatmaps: also the side-by-side panel PNG (~210 KB a scan)
    save_maps: bool = False  # with heatmaps: also the raw 14x14 map as .npy
    cmap: str = "viridis"
    alpha: float = 0.6  # the overlay's opacity at the map's peak (it fades to clear where the map is low)
    workers: int = 2  # decode threads (Pillow releases the GIL while decoding)
    faithfulness: int = 100  # with masks: deletion/insertion curves for at most this many scans (29 passes each)
    ood_threshold: float | None = None  # flag scans with ood_score above it; None: the model card's threshold
    shard: tuple[int, int] | None = None  # (I, N): only the I-th of N parts of the files, by path (brisc.inference.shard)
    engine: str = "local"  # local: this process; ray: Ray Data actors, one session each (brisc.inference.ray_engine)
    ray_address: str | None = None  # None: a local Ray started for the run; "auto" or "ray://host:port" joins a cluster
    concurrency: int = 2  # --engine ray: actors, one onnxruntime session each
    gpus_per_worker: float = 0.0  # --engine ray: GPUs each actor asks Ray for (with --device cuda)
    plane: str = "axial"  # volumes: the plane the slices are cut along (brisc.volumes.PLANES)
    volume_index: int | None = None  # volumes: the volume of a 4D NIfTI file
    volume_slices: int = 3  # the per-volume rule's K: contiguous slices of one tumour class (brisc.inference.per_volume)
    volume_probability: float = 0.9  # the per-volume rule's t: each of them at least this probable
    heatmap_format: str = "png"  # outputs.HEATMAP_FORMATS: the overlay as a palette PNG, or a JPEG
