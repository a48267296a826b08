"""The lessons: present, committed executed and up to date with their sources, and executed here from scratch.

Each lesson's source of truth is lessons/src/NN_slug.py; scripts/build_lessons.py (`make lessons`) turns it
into the executed notebook lessons/NN_slug.ipynb and the learner's copy lessons/exercises/NN_slug.ipynb. Here
every lesson runs once in a fresh Jupyter kernel started from this interpreter (the repository first on its
PYTHONPATH, lessons/ as its working folder), in its "verify" form: before each check cell, the unfilled stub
of the exercise runs and the check must fail on it; then the solution runs again and the check must pass.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the dev extra installs them; a bare GPU box may lack them
pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
EXPECTED = (
    "01_autograd",
    "02_linear_softmax_gradcheck",
    "03_convolution",
    "04_making_it_fast",
    "05_relu_pool_lrn_dropout",
    "06_alexnet_architecture",
    "07_training",
    "08_augmentation",
    "09_what_it_learned",
    "10_gpu",
)

# Appended to the in-memory copy of each notebook: proves which interpreter and which package ran it.
_WHERE_CELL = "import sys, minigrad\nprint(sys.executable)\nprint(minigrad.__file__)"


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_lessons", ROOT / "scripts" / "build_lessons.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_lessons"] = module
    spec.loader.exec_module(module)
    return module


builder = _load_builder()
SOURCES = builder.sources()


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def _lesson_number(path: Path) -> str | None:
    """'07' for 07_training.ipynb, src/07_training.py and lesson_checks/lesson07.py; None for shared files."""
    match = re.match(r"(?:lesson)?(\d\d)(?:_|\.py$)", path.name)
    return match.group(1) if match else None


def _files_under(folder: Path, lesson: str) -> dict[str, int]:
    """Modification times of the files under folder, except caches and other lessons' own files (which may
    be rebuilt while this lesson runs)."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and _lesson_number(p) in (None, lesson)
    }


def _stream_text(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("07_training.ipynb", "07"),
        ("src/07_training.py", "07"),
        ("lesson_checks/lesson07.py", "07"),
        ("__init__.py", None),
    ],
)
def test_lesson_files_are_told_apart(name: str, number: str | None) -> None:
    assert _lesson_number(LESSONS / name) == number


def test_all_ten_lessons_are_present() -> None:
    for folder, kind in ((LESSONS / "src", ".py"), (LESSONS, ".ipynb"), (LESSONS / "exercises", ".ipynb")):
        missing = [name for name in EXPECTED if not (folder / f"{name}{kind}").is_file()]
        assert not missing, f"missing in {folder.relative_to(ROOT)}: {missing}"


def test_no_notebook_without_a_source() -> None:
    names = {p.stem for p in SOURCES}
    for folder in (LESSONS, LESSONS / "exercises"):
        orphans = sorted(p.name for p in folder.glob("*.ipynb") if p.stem not in names)
        assert not orphans, f"notebooks in {folder.relative_to(ROOT)} with no source in lessons/src: {orphans}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_built_and_executed(source: Path) -> None:
    path = LESSONS / f"{source.stem}.ipynb"
    assert path.is_file(), f"{path.name} missing: run `make lessons`"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    built = builder.solution_notebook(builder.parse(source))
    assert _cells(nb) == _cells(built), f"{path.name} is stale: its cells differ from {source.name}; `make lessons`"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Lesson "), "start with a title"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.execution_count is not None, f"{path.name}, cell {i}: not executed; `make lessons`"
            errors = [out for out in cell.outputs if out.get("output_type") == "error"]
            assert not errors, f"{path.name}, cell {i}: committed with an error output"
    assert builder.count_figures(nb) >= 1, f"{path.name}: no figure (image/png output)"
    assert "this notebook ran in" in _stream_text(nb.cells[-1]), "the last cell states the runtime"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_exercises_copy_is_the_stub_version(source: Path) -> None:
    path = LESSONS / "exercises" / f"{source.stem}.ipynb"
    assert path.is_file(), f"exercises/{path.name} missing: run `make lessons`"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = builder.parse(source)
    assert _cells(nb) == _cells(builder.exercise_notebook(cells)), f"exercises/{path.name} is stale"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"exercises/{path.name}, cell {i}: outputs"
    assert any(c.kind == "exercise" for c in cells), f"{source.name} has no exercise"
    assert any(c.kind == "check" for c in cells), f"{source.name} has no check"


def test_stubs_replace_each_solution_region(tmp_path: Path) -> None:
    source = tmp_path / "99_example.py"
    source.write_text(
        "# %% [markdown]\n# # Lesson 99: example\n#\n# text\n"
        "# %% [exercise]\nclass Square:\n    def backward(self, x, g):\n"
        '        """Hint kept."""\n        # BEGIN SOLUTION\n        return 2 * x * g\n        # END SOLUTION\n'
        "# %% [check]\nassert Square().backward(3, 1) == 6\n"
    )
    cells = builder.parse(source)
    assert [c.kind for c in cells] == ["markdown", "exercise", "check"]
    assert cells[0].lines == ["# Lesson 99: example", "", "text"]
    assert cells[2].exercise == 1
    assert builder.solution_source(cells[1]).endswith('"""Hint kept."""\n        return 2 * x * g')
    assert builder.stub_source(cells[1]).endswith(
        '"""Hint kept."""\n        raise NotImplementedError("Exercise: write Square.backward")'
    )


@pytest.mark.parametrize(
    "body",
    [
        "# %% [check]\nx = 1\n",  # a check with no exercise
        "# %% [exercise]\nx = 1\n",  # an exercise with no solution region
        "# %% [exercise]\n# BEGIN SOLUTION\nx = 1\n",  # an unclosed region
        "# %% [markdown]\nnot a comment\n",
        "x = 1\n# %%\ny = 2\n",  # code before the first cell
    ],
)
def test_malformed_sources_are_refused(tmp_path: Path, body: str) -> None:
    source = tmp_path / "99_bad.py"
    source.write_text(body)
    with pytest.raises(builder.LessonSourceError):
        builder.parse(source)


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_lesson_executes_and_checks_fail_on_stubs(source: Path) -> None:
    nb = builder.verify_notebook(builder.parse(source))
    nb.cells.append(nbformat.v4.new_code_cell(_WHERE_CELL, metadata={builder.INSERTED: "where"}))
    before = _files_under(LESSONS, source.name[:2])
    seconds = builder.execute(nb)  # raises CellExecutionError, naming the cell, when a cell fails
    print(f"{source.stem}: executed in {seconds:.1f} s")

    executable, package = _stream_text(nb.cells[-1]).split()
    assert Path(executable).resolve() == Path(sys.executable).resolve(), "the kernel ran another interpreter"
    assert Path(package).resolve().is_relative_to(ROOT), f"the lesson imported minigrad from {package}"
    assert _files_under(LESSONS, source.name[:2]) == before, "executing a lesson must not write into the repository"

    stub_runs = [c for c in nb.cells if c.metadata.get(builder.INSERTED) == "stub and check"]
    for cell in stub_runs:
        assert "the check fails, as it should" in _stream_text(cell)
    committed = LESSONS / f"{source.stem}.ipynb"
    if committed.is_file():
        expected = builder.count_figures(nbformat.read(committed, as_version=4))
        assert builder.count_figures(nb) == expected, "a figure the committed notebook shows was not drawn"


def _lesson_checks():
    sys.path.insert(0, str(LESSONS))
    try:
        import lesson_checks
    finally:
        sys.path.remove(str(LESSONS))
    return lesson_checks


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 2.0], [1.0, 2.0], 0.0),
        ([0.0, 0.0], [0.0, 0.0], 0.0),
        ([1.0, 0.0], [1.0, 1e-12], 1e-12 / 2.0),  # one scale for all entries: a near-zero entry is not "100% off"
        ([3.0], [1.0], 0.5),
    ],
)
def test_relative_error_uses_the_largest_magnitude(a: list, b: list, expected: float) -> None:
    assert _lesson_checks().relative_error(a, b) == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize(("error", "passes"), [(1e-9, True), (1e-7, False), (float("nan"), False)])
def test_report_prints_the_line_and_asserts(capsys, error: float, passes: bool) -> None:
    checks = _lesson_checks()
    line = f"dx: max relative error {error:.1e}, should be < 1e-07"
    if passes:
        checks.report("dx", error, 1e-7)
    else:
        with pytest.raises(AssertionError, match=line.replace("+", "[+]")):
            checks.report("dx", error, 1e-7)
    assert capsys.readouterr().out == line + "\n"


def test_check_close_refuses_other_shapes_and_fails_on_returns() -> None:
    checks = _lesson_checks()
    with pytest.raises(AssertionError, match="shape"):
        checks.check_close("x", [1.0, 2.0], [[1.0, 2.0]], 1e-7)
    assert isinstance(checks.fails_on(lambda: 1 / 0), ZeroDivisionError)
    with pytest.raises(AssertionError, match="should have raised"):
        checks.fails_on(lambda: 1)


def test_runtime_is_reported_from_the_clock(capsys) -> None:
    checks = _lesson_checks()
    checks.start_clock()
    time.sleep(0.2)
    checks.report_runtime()
    seconds = float(capsys.readouterr().out.removeprefix("this notebook ran in ").removesuffix(" s\n"))
    assert seconds >= 0.2
