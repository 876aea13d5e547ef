"""The README's results table is generated from the committed snapshot of the latest full run."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cae.core import runs
from cae.report.readme import BEGIN, END, FILES, OPTIONAL, SNAPSHOT, replace_block, results_block
from conftest import QuickRun, require

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_is_the_snapshot_of_the_latest_full_run() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == results_block(ROOT / SNAPSHOT).strip(), "regenerate: cae report RUN --readme README.md"
    repro = runs.read_json(ROOT / SNAPSHOT / "reproducibility.json")
    assert "--quick" not in repro["command"], "the README's figures come from a full run"


def test_the_colorizer_row_is_the_shipped_weights_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = runs.shipped_run("colorizer")
    block = results_block(ROOT / SNAPSHOT)
    recorded = runs.read_json(shipped / runs.TEST_METRICS)
    assert f"| {recorded['mse']:.5f} | colorfulness {recorded['colorfulness'] / recorded['colorfulness_truth']:.0%}" in block
    other = tmp_path / "colorizer"
    other.mkdir()
    runs.write_json(other / runs.TEST_METRICS, {**recorded, "mse": 0.0123456, "colorfulness": recorded["colorfulness_truth"] / 2})
    monkeypatch.setattr(runs, "shipped_run", lambda name: other if name == "colorizer" else shipped)
    assert "| 0.01235 | colorfulness 50% of the truth's |" in results_block(ROOT / SNAPSHOT)


def _copy(src: Path, dest: Path) -> Path:
    for name in FILES + OPTIONAL:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dest / name)
    return dest


@pytest.mark.slow
def test_block_follows_the_numbers(quick_reproduce: QuickRun, tmp_path: Path) -> None:
    """Change a result and the text changes with it: nothing in the block is typed in."""
    root = _copy(quick_reproduce.out, tmp_path / "r")
    before = results_block(root)
    metrics = runs.read_json(root / "reference/test_metrics.json")
    runs.write_json(root / "reference/test_metrics.json", {**metrics, "mse": 0.0123456})
    path = root / "study/results.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    worst = max((r for r in rows if r["kind"] != "pca"), key=lambda r: float(r["test_mse"]))
    worst["test_mse"] = "1e-9"  # now the best variant
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    after = results_block(root)
    assert "0.01235" in after and "0.01235" not in before
    assert f"best of the {sum(r['kind'] != 'pca' for r in rows)} study variants: {worst['name']}" in after
    # the frontier (the quick run has one): a size where the CAE now beats PCA is named
    path = root / "frontier/frontier.csv"
    front = list(csv.DictReader(io.StringIO(path.read_text())))
    assert "beats PCA at none of" in after
    front[-1].update(best_mse=str(float(front[-1]["pca_mse"]) / 2), ratio_to_pca="0.5")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(front[0]))
        writer.writeheader()
        writer.writerows(front)
    assert f"beats PCA at latent {front[-1]['latent_size']} of {len(front)} sizes" in results_block(root)
    # a run made with its CPU limited (e.g. to AVX2 for a comparison) says so
    repro = runs.read_json(root / "reproducibility.json")
    assert "with `" not in results_block(root)
    repro["machine"]["speed_settings"] = "ONEDNN_MAX_CPU_ISA=AVX2"
    runs.write_json(root / "reproducibility.json", repro)
    assert "2 cores, with `ONEDNN_MAX_CPU_ISA=AVX2`, torch" in results_block(root).replace(
        f"{repro['machine']['cpu_count']} cores", "2 cores")


def test_the_machine_record_names_what_limits_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from cae.reproduce import SPEED_VARIABLES, _machine

    for var in SPEED_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert _machine()["speed_settings"] is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert _machine()["speed_settings"] == "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2"


def test_replace_block_keeps_the_rest() -> None:
    text = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert replace_block(text, "new") == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"


def test_readme_command_hides_the_machines_run_folder() -> None:
    from cae.report.readme import without_out

    assert without_out("cae reproduce --out /home/me/run --frontier") == "cae reproduce --frontier"
    assert without_out("cae reproduce --out=/x") == "cae reproduce"


def test_make_finds_the_shared_data_without_cae_data_dir() -> None:
    """The README's `make reproduce` on a machine with ../shared beside the clone and no internet:
    the Makefile points CAE_DATA_DIR at the shared copy, and a value already set wins."""
    shared = ROOT.parent / "shared" / "datasets" / "cifar-10-batches-bin"
    require(shared.is_dir(), f"no shared CIFAR-10 copy at {shared}")
    env = {k: v for k, v in os.environ.items() if k not in ("CAE_DATA_DIR", "MAKEFLAGS")}

    def seen(extra: dict) -> str:
        show = ["make", "-s", "--no-print-directory", "--eval", 'show-data: ; @echo "$$CAE_DATA_DIR"', "show-data"]
        return subprocess.run(show, cwd=ROOT, env={**env, **extra}, capture_output=True, text=True, check=True).stdout.strip()

    assert Path(seen({})).resolve() == shared.resolve()
    assert seen({"CAE_DATA_DIR": "/elsewhere"}) == "/elsewhere"


def test_usage_table_of_python_functions_names_real_functions_and_options() -> None:
    """docs/usage.md's command -> function table: every function exists (so its dotted name
    imports), and every keyword it shows is one the function takes."""
    import importlib
    import inspect
    import re

    text = (ROOT / "docs" / "usage.md").read_text().split("| command | function |", 1)[1]
    calls = re.findall(r"^\| [^|]+ \| `([\w.]+)\(([^)]*)\)` \|$", text, flags=re.M)
    assert len(calls) >= 8, calls
    for dotted, args in calls:
        module, _, name = dotted.rpartition(".")
        function = getattr(importlib.import_module(module), name)
        taken = inspect.signature(function).parameters
        for keyword in re.findall(r"(\w+)=\.\.\.", args):
            assert keyword in taken or any(p.kind is p.VAR_KEYWORD for p in taken.values()), (dotted, keyword)
