"""The tutorial notebooks: committed with cleared outputs, and each one runs top to bottom.

Execution uses the quick setting (``TL_DIFFUSION_PRIOR_QUICK=1``) and a scratch working directory,
so nothing is written into the repository. Every notebook in ``tutorials/`` is picked up.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tl_diffusion_prior.constants import QUICK_ENV_VAR

TUTORIALS_DIR = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600
KERNEL_NAME = "tl-diffusion-prior-tests"


def _notebook_id(path: Path) -> str:
    return path.stem


def test_tutorials_exist():
    assert len(NOTEBOOKS) >= 2, f"expected the tutorial notebooks in {TUTORIALS_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_notebook_id)
def test_notebook_is_committed_clean_or_fully_run(path: Path):
    """A committed notebook is either cleared or the outputs of one full run, top to bottom, so
    a reader on the web never sees outputs from a mix of runs or of a partial run."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    if all(count is None and not cell.outputs for count, cell in zip(counts, code, strict=True)):
        return
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts} are not one run of every cell in order; re-run "
        "the notebook top to bottom (or clear all outputs) before committing."
    )
    errors = [o for cell in code for o in cell.outputs if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: committed with an error output"


def _venv_kernel_manager(kernel_dir: Path):
    """A kernel manager that launches ipykernel with this interpreter (the venv's python).

    A kernel named "python3" could resolve to a spec from another environment (a user-level
    kernelspec shadows the venv's), so a private spec pointing at ``sys.executable`` is used.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = kernel_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tl-diffusion-prior tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    spec_manager = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=spec_manager)


def quick_env() -> dict[str, str]:
    """The kernel's environment: the quick setting, inline plots, one thread unless set.

    CI machines have two cores shared with other jobs; torch's OpenMP threads then spin-wait on
    descheduled siblings and run several times slower than a single thread does.
    """
    env = {**os.environ, QUICK_ENV_VAR: "1"}
    # ipykernel only selects its inline backend when MPLBACKEND is unset; plots should render.
    env.pop("MPLBACKEND", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def execute_notebook(path: Path, workdir: Path, env: dict[str, str]) -> tuple[object, float]:
    """Run every cell of ``path`` in ``workdir``; returns the executed notebook and seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    kernel_dir = workdir / ".kernels"
    run_dir = workdir / "run"
    run_dir.mkdir(parents=True)
    client = NotebookClient(
        nb,
        km=_venv_kernel_manager(kernel_dir),
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(run_dir)}},
    )
    start = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - start


def test_kernel_runs_this_interpreter(tmp_path: Path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    path = tmp_path / "probe.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("import sys; print(sys.executable)")]), path)
    nb, _ = execute_notebook(path, tmp_path / "probe", dict(os.environ))
    printed = nb.cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


def _non_notebook_files() -> list[Path]:
    # Notebooks are left out: other notebooks may be added while a long test runs.
    return sorted(p for p in TUTORIALS_DIR.rglob("*") if p.suffix != ".ipynb")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_notebook_id)
def test_notebook_runs(path: Path, tmp_path: Path):
    env = quick_env()
    tutorials_before = _non_notebook_files()
    nb, seconds = execute_notebook(path, tmp_path, env)
    print(f"{path.name}: {seconds:.1f} s")
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    # nbclient raises CellExecutionError on the first erroring cell; this also catches errors
    # that an allow_errors configuration would let through.
    errors = [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    assert all(cell.execution_count is not None for cell in code_cells)
    plots = any("plt." in cell.source for cell in code_cells)
    images = [
        out for cell in code_cells for out in cell.outputs if "image/png" in out.get("data", {})
    ]
    assert images or not plots, f"{path.name}: it plots, but no figure rendered inline"
    written = sorted(set(_non_notebook_files()) - set(tutorials_before))
    assert not written, f"{path.name} wrote into tutorials/: {written}"
