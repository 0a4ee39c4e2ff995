"""The layers of docs/architecture.md, checked on the source: no module imports a layer above its own."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "brisc"

# Layer of each top-level part of the package; a module may import its own layer and the ones below.
LAYERS = {"core": 0, "train": 1, "inference": 1, "export": 2, "apps": 4}
APPS = {"demo", "data_cli", "synth_cli", "cli"}  # command shells over the layers below (cli: the `brisc` group)
FORBIDDEN = {"inference": {"torch", "torchvision", "transformers", "brisc.train", "brisc.export"},  # torch-free
             "core": {"torch", "torchvision", "transformers"}}
EXTRAS = {"ray", "nibabel", "pydicom"}  # optional extras: imported only inside the functions that need them


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in APPS:
        return "apps" if len(parts) > 1 and parts[1] in APPS else "core"
    return parts[1] if parts[1] in LAYERS else "core"


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Absolute imports of a module (with ``top_level_only``, not those inside functions: lazy imports)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree)
    if top_level_only:
        lazy = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                for n in ast.walk(f)}
        nodes = (n for n in ast.walk(tree) if id(n) not in lazy)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules():
    for p in sorted(SRC.rglob("*.py")):
        yield "brisc." + ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"), p


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for name, path in modules():
        mine = layer_of(name)
        for imp in imports(path):
            if imp.startswith("brisc.") and LAYERS[layer_of(imp)] > LAYERS[mine]:
                wrong.append(f"{name} ({mine}) imports {imp} ({layer_of(imp)})")
            if mine == layer_of(imp) != "core" and imp.split(".")[1] != name.split(".")[1]:
                wrong.append(f"{name} imports {imp}: train and inference do not import each other")
    assert not wrong, "\n".join(wrong)


def _is(imp: str, banned: set[str]) -> bool:
    return any(imp == b or imp.startswith(b + ".") for b in banned)


def test_inference_and_the_core_stay_torch_free_and_extras_stay_lazy():
    """Inference never imports torch; the core only lazily, in functions that training calls (hardware); no module
    imports an optional extra (Ray, nibabel, pydicom) at its top, so `import brisc.inference` works without them.
    (test_infer runs brisc-infer and checks the same on the modules it actually loaded.)"""
    wrong = []
    for name, path in modules():
        layer = layer_of(name)
        banned = FORBIDDEN.get(layer, set())
        wrong += [f"{name} imports {imp}" for imp in imports(path, top_level_only=layer == "core") if _is(imp, banned)]
        wrong += [f"{name} imports the extra {imp} at its top" for imp in imports(path, top_level_only=True)
                  if _is(imp, EXTRAS)]
    assert not wrong, "\n".join(wrong)


def test_long_modules_say_why_at_the_top():
    for name, path in modules():
        lines = path.read_text().splitlines()
        if len(lines) > 300:
            head = "\n".join(lines[:15]).lower()
            assert "long on purpose" in head, f"{name}: {len(lines)} lines without 'long on purpose: <why>' at its top"


def test_each_cli_and_its_options_dataclass_agree():
    """Every option of brisc-train, brisc-export and brisc-infer lands in its options dataclass, and every field
    of the dataclass has its option: the two spellings cannot drift apart."""
    from dataclasses import fields

    from brisc.export.run import ExportOptions
    from brisc.export.cli import main as export_main
    from brisc.inference.cli import main as infer_main
    from brisc.inference.runner import InferOptions
    from brisc.train.cli import RunOptions
    from brisc.train.cli import main as train_main

    # CLI parameter -> dataclass field, where the names differ; None: a CLI-only switch (output, device, session)
    cases = [
        (train_main, RunOptions, {"data_arg": "data", "wandb_mode": "wandb"}),
        (export_main, ExportOptions, {"fmt": "format"}),
        (infer_main, InferOptions, {"scans": "inputs", "model": None, "threads": None, "device": None, "quiet": None}),
    ]
    for cli, opts, renamed in cases:
        params = {renamed.get(p.name, p.name) for p in cli.params} - {None}
        names = {f.name for f in fields(opts)}
        assert params == names, (cli.name, params ^ names)


def test_every_reader_names_the_output_files_through_outdir():
    """brisc-infer's file names are spelled once (inference.outdir: OutFolder and its constants): no code in src/,
    scripts/ or benchmarks/ joins a path with one of them as a literal."""
    import re

    from brisc.inference.outdir import OWN_FILES

    joined = re.compile(r"/\s*[\"'](" + "|".join(re.escape(n) for n in OWN_FILES) + r")[\"']")
    root = SRC.parents[1]
    wrong = [f"{p.relative_to(root)}:{n}" for d in ("src", "scripts", "benchmarks") for p in sorted((root / d).rglob("*.py"))
             if p.name != "outdir.py" for n, line in enumerate(p.read_text().splitlines(), 1) if joined.search(line)]
    assert not wrong, wrong


def test_the_row_builder_and_the_columns_are_one_contract():
    """inference.outdir holds brisc-infer's row: new_row gives every column of predictions.csv, in its order."""
    from brisc import CLASSES
    from brisc.inference.outdir import ROW_FIELDS, new_row

    row = new_row(path="a.jpg", frame=None, volume=None, probabilities={c: 0.25 for c in CLASSES}, ood_score=1.0,
                  in_distribution=True, true_label=None, explain="cls", model="m.onnx", model_sha256="0" * 64,
                  provider="CPUExecutionProvider", input_sha256="1" * 64, time="2026-12-02T00:00:00+00:00")
    columns = [k for k in row if k != "probabilities"]
    at = columns.index("probability") + 1
    assert columns[:at] + [f"p_{c}" for c in CLASSES] + columns[at:] == ROW_FIELDS


def test_the_shared_options_are_spelled_only_in_brisc_options():
    """--split, --val-fraction, --device, --wandb and --bf16 mean the same in every command that has them, so only
    brisc/options.py spells them (other commands' --seed or --resume mean other things and are their own)."""
    shared = ('"--split"', '"--val-fraction"', '"--device"', '"--wandb"', '"--bf16/--no-bf16"')
    wrong = [f"{name} spells {o}" for name, path in modules() if name != "brisc.options"
             for o in shared if f"click.option({o}" in path.read_text()]
    assert not wrong, "\n".join(wrong)
