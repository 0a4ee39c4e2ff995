import subprocess
import sys


def test_the_distribution_is_brisc_mri_and_provides_the_brisc_commands():
    """PyPI's "brisc" is someone else's project: ours installs as brisc-mri, with the brisc commands."""
    import importlib.metadata as md

    import brisc

    dists = set(md.packages_distributions()["brisc"])
    assert dists == {"brisc-mri"}, dists
    scripts = {e.name for e in md.distribution("brisc-mri").entry_points if e.group == "console_scripts"}
    assert {"brisc-train", "brisc-pretrain", "brisc-export", "brisc-infer", "brisc-data"} <= scripts
    assert md.version("brisc-mri") == brisc.__version__


def test_demo_refuses_a_folder_with_someone_elses_files(tmp_path):
    from conftest import run_cli

    (tmp_path / "notes.txt").write_text("mine")
    r = run_cli("brisc.demo", "--out", tmp_path, check=False)
    assert r.returncode == 2 and "did not write (notes.txt)" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"
