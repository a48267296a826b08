"""Build the lesson notebooks from their sources in lessons/src/.

    python scripts/build_lessons.py            # every lesson
    python scripts/build_lessons.py 03 05      # lessons 03 and 05 only

Each source lessons/src/NN_slug.py is a Python "percent" file:

    # %% [markdown]     a markdown cell: its lines are comments ('# text', or '#' for an empty line)
    # %%                a code cell
    # %% [exercise]     a code cell the learner fills in: the reference solution sits between a line
                        '# BEGIN SOLUTION' and a line '# END SOLUTION' (several pairs per cell are fine)
    # %% [check]        the check of the exercise before it (calls lessons/lesson_checks/lessonNN.py)

Lines before the first '# %%' must be blank or comments (e.g. a '# ruff: noqa' line); they are dropped.

For each source the builder writes
- lessons/NN_slug.ipynb: solutions filled in, executed top to bottom with nbclient (kernel python3, working
  folder lessons/, the repository first on PYTHONPATH), outputs kept, metadata minimal and stable;
- lessons/exercises/NN_slug.ipynb: the learner's copy: every solution region (markers included) becomes
  `raise NotImplementedError("Exercise: ...")` at the same indentation; no outputs.

tests/test_lessons.py imports this file for the same conversions and for the "verify" form of a lesson: the
solution notebook where, right before each check, the stub of its exercise runs followed by the check, which
must fail; then the solution again, then the real check.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
SOURCES = LESSONS / "src"
EXERCISES = LESSONS / "exercises"

CELL_TIMEOUT_S = 600
KERNEL = "python3"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
INSERTED = "verify_inserted"  # cell metadata key of the cells the verify form adds
_MARKER = re.compile(r"^# %%(?: \[(markdown|exercise|check)\])?\s*$")
_DEF = re.compile(r"^(\s*)(?:async\s+)?(def|class)\s+(\w+)")


@dataclass
class Cell:
    """One cell of a lesson source: kind is 'markdown', 'code', 'exercise' or 'check'."""

    kind: str
    lines: list[str]
    first_line: int  # 1-based line number in the source, for error messages
    exercise: int | None = None  # for a check: the index (among cells) of the exercise it checks
    meta: dict = field(default_factory=dict)


class LessonSourceError(ValueError):
    """A lesson source that does not follow the format above (the message names file and line)."""


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def _strip_blank_edges(lines: list[str]) -> list[str]:
    start, stop = 0, len(lines)
    while start < stop and not lines[start].strip():
        start += 1
    while stop > start and not lines[stop - 1].strip():
        stop -= 1
    return lines[start:stop]


def parse(path: Path) -> list[Cell]:
    """The cells of one lesson source, with each check linked to the exercise it follows."""
    cells: list[Cell] = []
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        match = _MARKER.match(line)
        if match:
            cells.append(Cell(kind=match.group(1) or "code", lines=[], first_line=number))
        elif cells:
            cells[-1].lines.append(line.rstrip())
        elif line.strip() and not line.lstrip().startswith("#"):
            raise LessonSourceError(f"{path}:{number}: code before the first '# %%' cell marker")
    last_exercise = None
    for index, cell in enumerate(cells):
        cell.lines = _strip_blank_edges(cell.lines)
        where = f"{path}:{cell.first_line}"
        if cell.kind == "markdown":
            cell.lines = [_markdown_line(line, where) for line in cell.lines]
        elif cell.kind == "exercise":
            _solution_regions(cell.lines, where)  # validates the markers
            last_exercise = index
        elif cell.kind == "check":
            if last_exercise is None:
                raise LessonSourceError(f"{where}: a [check] cell with no [exercise] cell before it")
            cell.exercise = last_exercise
        if not cell.lines:
            raise LessonSourceError(f"{where}: empty cell")
        if cell.kind != "exercise" and any(line.strip() in (BEGIN, END) for line in cell.lines):
            raise LessonSourceError(f"{where}: solution markers outside an [exercise] cell")
    if not cells:
        raise LessonSourceError(f"{path}: no cells (cells start with '# %%')")
    return cells


def _markdown_line(line: str, where: str) -> str:
    if line == "#":
        return ""
    if line.startswith("# "):
        return line[2:]
    if not line.strip():
        return ""
    raise LessonSourceError(f"{where}: markdown lines start with '# ' (or are a bare '#'): {line!r}")


def _solution_regions(lines: list[str], where: str) -> list[tuple[int, int]]:
    """(begin, end) line indices of each '# BEGIN SOLUTION' ... '# END SOLUTION' pair, markers included."""
    regions, begin = [], None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped == BEGIN:
            if begin is not None:
                raise LessonSourceError(f"{where}: '{BEGIN}' inside another solution region")
            begin = i
        elif stripped == END:
            if begin is None:
                raise LessonSourceError(f"{where}: '{END}' without '{BEGIN}'")
            if _indent(lines[begin]) != _indent(line):
                raise LessonSourceError(f"{where}: '{BEGIN}' and '{END}' are indented differently")
            regions.append((begin, i))
            begin = None
    if begin is not None:
        raise LessonSourceError(f"{where}: '{BEGIN}' without '{END}'")
    if not regions:
        raise LessonSourceError(f"{where}: an [exercise] cell needs a '{BEGIN}' ... '{END}' region")
    return regions


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


# ---------------------------------------------------------------------------------------------------------------
# The two versions of an exercise cell


def solution_source(cell: Cell) -> str:
    """The cell's source with the solutions in place and the marker lines removed."""
    return "\n".join(line for line in cell.lines if line.strip() not in (BEGIN, END))


def stub_source(cell: Cell) -> str:
    """The learner's version: each solution region (markers included) becomes one raise NotImplementedError."""
    if cell.kind != "exercise":
        return "\n".join(cell.lines)
    out: list[str] = []
    regions = _solution_regions(cell.lines, f"cell at line {cell.first_line}")
    position = 0
    for begin, end in regions:
        out.extend(cell.lines[position:begin])
        what = _enclosing_name(cell.lines[:begin], _indent(cell.lines[begin]))
        out.append(f'{_indent(cell.lines[begin])}raise NotImplementedError("Exercise: {what}")')
        position = end + 1
    out.extend(cell.lines[position:])
    return "\n".join(out)


def _enclosing_name(lines_above: list[str], indent: str) -> str:
    """'write Linear.backward' for a region in a method, 'write conv_backward_naive' in a function, else
    'fill in this part of the cell'."""
    names, depth = [], len(indent)
    for line in reversed(lines_above):
        match = _DEF.match(line)
        if match and len(match.group(1)) < depth:
            names.append(match.group(3))
            depth = len(match.group(1))
    if not names:
        return "fill in this part of the cell"
    return "write " + ".".join(reversed(names))


def source_of(cell: Cell, stub: bool = False) -> str:
    """The notebook source of a cell (markdown text, or code with solutions or stubs)."""
    if cell.kind == "exercise":
        return stub_source(cell) if stub else solution_source(cell)
    return "\n".join(cell.lines)


# ---------------------------------------------------------------------------------------------------------------
# Notebooks


def _nbformat():
    import nbformat  # imported here so that --help works without the dev extra

    return nbformat


def _new_notebook(cells: list) -> object:
    nbformat = _nbformat()
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    normalize(nb)
    return nb


def normalize(nb: object) -> None:
    """Stable metadata: kernelspec python3 only, no timestamps, cell ids numbered in order."""
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": KERNEL},
        "language_info": {"name": "python"},
    }
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index:03d}"
        keep = {key: value for key, value in cell.get("metadata", {}).items() if key == INSERTED}
        cell.metadata = keep


def _cell(kind: str, source: str, **metadata: object) -> object:
    v4 = _nbformat().v4
    cell = v4.new_markdown_cell(source) if kind == "markdown" else v4.new_code_cell(source)
    cell.metadata = dict(metadata)
    return cell


def solution_notebook(cells: list[Cell]) -> object:
    """The lesson with solutions filled in (not executed)."""
    return _new_notebook([_cell(c.kind, source_of(c)) for c in cells])


def exercise_notebook(cells: list[Cell]) -> object:
    """The learner's copy: stubs in the exercise cells, no outputs."""
    return _new_notebook([_cell(c.kind, source_of(c, stub=True)) for c in cells])


def verify_notebook(cells: list[Cell]) -> object:
    """The solution notebook with, before each check: the stub and the check (which must fail), then the
    solution again. The inserted cells carry the metadata key INSERTED."""
    out = []
    for cell in cells:
        if cell.kind == "check":
            exercise = cells[cell.exercise]
            must_fail = (
                "import lesson_checks\n\n"
                f"lesson_checks.check_fails_on_stub({stub_source(exercise)!r}, {source_of(cell)!r})"
            )
            out.append(_cell("code", must_fail, **{INSERTED: "stub and check"}))
            out.append(_cell("code", solution_source(exercise), **{INSERTED: "solution again"}))
        out.append(_cell(cell.kind, source_of(cell)))
    return _new_notebook(out)


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this checkout first on PYTHONPATH, figures inline, no bytecode written."""
    env = dict(os.environ)
    paths = (str(ROOT), str(LESSONS), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("MPLBACKEND", None)  # let the kernel use its inline backend for figures
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # executing a lesson writes nothing into the repository
    env["MINIGRAD_QUIET"] = "1"  # no compile notice on stderr: outputs do not depend on Numba's cache
    return env


def execute(nb: object, timeout: int = CELL_TIMEOUT_S) -> float:
    """Run nb in place in a fresh kernel (working folder lessons/); return the seconds it took.

    Raises nbclient's CellExecutionError, naming the cell, when a cell fails."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        record_timing=False,
        resources={"metadata": {"path": str(LESSONS)}},
    )
    start = time.perf_counter()
    client.execute(env=kernel_env())
    seconds = time.perf_counter() - start
    normalize(nb)
    return seconds


def count_figures(nb: object, skip_inserted: bool = True) -> int:
    """The number of image/png outputs (figures), leaving out the cells the verify form inserted."""
    total = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or (skip_inserted and INSERTED in cell.metadata):
            continue
        total += sum(1 for out in cell.get("outputs", []) if "image/png" in out.get("data", {}))
    return total


def sources() -> list[Path]:
    """lessons/src/NN_slug.py for every lesson, in order."""
    return sorted(p for p in SOURCES.glob("[0-9][0-9]_*.py"))


def build(path: Path) -> tuple[float, int]:
    """Write the executed solution notebook and the exercises copy of one source; (seconds, figures)."""
    nbformat = _nbformat()
    cells = parse(path)
    nb = solution_notebook(cells)
    seconds = execute(nb)
    EXERCISES.mkdir(exist_ok=True)
    nbformat.write(nb, LESSONS / f"{path.stem}.ipynb")
    nbformat.write(exercise_notebook(cells), EXERCISES / f"{path.stem}.ipynb")
    return seconds, count_figures(nb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build lessons/NN_slug.ipynb and lessons/exercises/NN_slug.ipynb.")
    parser.add_argument("lessons", nargs="*", help="lesson numbers (e.g. 03 5); default: all in lessons/src/")
    args = parser.parse_args(argv)
    wanted = {f"{int(n):02d}" for n in args.lessons}
    paths = [p for p in sources() if not wanted or p.name[:2] in wanted]
    missing = wanted - {p.name[:2] for p in paths}
    if missing:
        parser.error(f"no source in {SOURCES} for lesson(s) {', '.join(sorted(missing))}")
    for path in paths:
        seconds, figures = build(path)
        print(f"{path.stem}: executed in {seconds:.1f} s, {figures} figure(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
