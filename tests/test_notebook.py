"""examples/tour.ipynb: committed as examples/build_tour.py writes it from examples/tour.py (no
outputs, so none can go stale), using only the public API, and run top to bottom on a fresh kernel
of this interpreter, as a reader would run it; a failing cell fails the test with its error."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

import cae
from conftest import require
from helpers import example_module

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOK = EXAMPLES / "tour.ipynb"
TIMEOUT = 900  # s for the whole notebook: generous for a busy 2-core machine
KERNEL = "cae-tour-test"


def code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_committed_notebook_is_built_from_tour_py_without_outputs() -> None:
    """Editing tour.py without rebuilding, or committing a notebook with outputs, fails here."""
    builder = example_module("build_tour")
    committed = NOTEBOOK.read_text()
    assert committed == builder.render((EXAMPLES / "tour.py").read_text()), \
        "examples/tour.ipynb is not what examples/tour.py gives: run python examples/build_tour.py"
    nb = json.loads(committed)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb["cells"] if c["cell_type"] == "code")


def test_the_builder_turns_percent_cells_into_notebook_cells() -> None:
    builder = example_module("build_tour")
    cells = builder.cells_of("# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n# %%\nprint(x)\n")
    assert cells == [("markdown", "# Title\n\ntext"), ("code", "x = 1"), ("code", "print(x)")]


def cae_names_used(source: str) -> set[str]:
    """The `cae.X` names a piece of code reads; every cae import is reported as `import ...`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cae":
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cae":
            names.add(f"import from {node.module}")
        elif isinstance(node, ast.Import):
            names.update(f"import {a.name}" for a in node.names if a.name.startswith("cae."))
    return names


def test_the_notebook_uses_only_the_public_api() -> None:
    """Only `import cae` and names in `cae.__all__`: a step that needs more is a gap in the API."""
    used = set().union(*(cae_names_used(src) for src in code_cells(json.loads(NOTEBOOK.read_text()))))
    assert used, "the notebook uses no cae names"
    assert used <= set(cae.__all__), f"not public API (cae.__all__): {sorted(used - set(cae.__all__))}"


def test_public_api_check_catches_deep_imports() -> None:
    assert cae_names_used("from cae.experiments.pca import fit_pca\nimport cae.core.data\ncae._train") == \
        {"import from cae.experiments.pca", "import cae.core.data", "_train"}


def this_interpreters_kernel(folder: Path) -> str:
    """A kernel spec that runs this interpreter (the venv the tests run in, with its PYTHONPATH),
    not whatever `python3` kernel a user or system Jupyter folder holds."""
    spec = folder / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cae tests", "language": "python"}))
    return str(folder)


@pytest.mark.slow
def test_the_tour_runs_top_to_bottom_on_a_fresh_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell runs (none skipped), in a temporary folder: the checkout is not written, nor
    the user's Jupyter and IPython folders (connection file, profile)."""
    data = os.environ.get("CAE_DATA_DIR")
    require(bool(data) and Path(data).is_dir(), "CAE_DATA_DIR is not set to the CIFAR-10 binary folder")
    require(all(importlib.util.find_spec(m) for m in ("nbclient", "nbformat", "ipykernel")),
            "nbclient, nbformat or ipykernel is missing: pip install -e '.[test]'")
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    specs = KernelSpecManager(kernel_dirs=[this_interpreters_kernel(tmp_path / "kernels")])
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    work = tmp_path / "work"
    work.mkdir()
    client = NotebookClient(nb, km=km, timeout=TIMEOUT, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}})
    client.execute()  # a cell that raises fails here (CellExecutionError names the cell and its error)
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in ran), "a code cell did not run"
    assert sum(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in ran for o in c.outputs) >= 5, "the notebook's figures were not drawn"
    assert (work / "runs" / "tour-quick" / "colorize-ycbcr" / "test_metrics.json").is_file()
