"""The lessons are executed here, top to bottom, so they never rot.

Each notebook in lessons/ runs in a fresh Jupyter kernel started from this interpreter, with the
repository first on the kernel's PYTHONPATH (so the lessons import this checkout, not some installed
copy) and lessons/ as its working folder (as when a learner opens it there). Any cell that raises fails
the test. The committed notebooks must carry no outputs and no execution counts, so diffs stay readable.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the dev extra installs them; a bare GPU box may lack them
NotebookClient = pytest.importorskip("nbclient").NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
EXPECTED = ("01_tensors_and_autograd.ipynb", "02_convolution.ipynb", "03_alexnet.ipynb")
CELL_TIMEOUT_S = 600  # per cell; each whole lesson takes well under a minute on 2 cores

# Appended to the in-memory copy of each notebook: proves which interpreter and which package ran it.
_WHERE_CELL = "import sys, minigrad\nprint(sys.executable)\nprint(minigrad.__file__)"


def _notebooks() -> list[Path]:
    return sorted(LESSONS.glob("*.ipynb"))


def _files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("MPLBACKEND", None)  # let the kernel use its inline backend for figures
    return env


def _stream_text(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def test_all_lessons_are_present() -> None:
    missing = set(EXPECTED) - {p.name for p in _notebooks()}
    assert not missing, f"lessons missing: {sorted(missing)}"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "start with a title"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name}, cell {i}: clear the outputs before committing"
        assert cell.execution_count is None, f"{path.name}, cell {i}: clear the execution count before committing"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_lesson_executes(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_WHERE_CELL))
    before = _files_under(LESSONS)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(LESSONS)}},
    )
    start = time.perf_counter()
    client.execute(env=_kernel_env())  # raises CellExecutionError, naming the cell, when a cell fails
    seconds = time.perf_counter() - start
    print(f"{path.name}: executed in {seconds:.1f} s")

    executable, package = _stream_text(nb.cells[-1]).split()
    assert Path(executable).resolve() == Path(sys.executable).resolve(), "the kernel ran another interpreter"
    assert Path(package).resolve().is_relative_to(ROOT), f"the lesson imported minigrad from {package}"
    assert _files_under(LESSONS) == before, "executing a lesson must not write into the repository"
