"""The `minigrad` command line: help with examples, --version, `python -m minigrad`, device names, gradcheck."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import strict_cupy

import minigrad
from minigrad import backend
from minigrad.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [[], ["gradcheck"], ["selfcheck"]])
def test_every_help_page_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: minigrad")
    assert "examples:\n  minigrad " + (command[0] if command else "gradcheck") in text


def test_the_selfcheck_help_documents_its_exit_codes(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["selfcheck", "--help"])
    text = capsys.readouterr().out
    assert "0 every check passed" in text and "1 a check failed" in text and "3 no GPU is usable" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"minigrad {minigrad.__version__}\n"


def test_python_dash_m_minigrad_is_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "minigrad", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"minigrad {minigrad.__version__}\n"


@pytest.mark.parametrize(
    ("given", "device"),
    [("cpu", "cpu"), ("gpu", "cuda:0"), ("cuda", "cuda:0"), ("cuda:0", "cuda:0"), ("CUDA:1", "cuda:1")],
)
@pytest.mark.parametrize("command", ["gradcheck", "selfcheck"])
def test_devices_are_named_as_alexnet_names_them(command, given, device):
    assert build_parser().parse_args([command, "--device", given]).device == device


@pytest.mark.parametrize("given", ["tpu", "cpu:1", "cuda:x", ""])
def test_unknown_devices_are_refused_with_the_names_that_work(given, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["gradcheck", "--device", given])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device" in err and ("use 'cpu', 'gpu', 'cuda' or 'cuda:N'" in err or "no index" in err)


def test_gradcheck_on_cuda_0_without_a_gpu_says_why(capsys):
    if backend.gpu_available():
        pytest.skip("a GPU is usable here")
    assert main(["gradcheck", "--device", "cuda:0", "--op", "relu"]) == 2
    err = capsys.readouterr().err
    assert "error: --device cuda:0, but no GPU is usable: " + backend.gpu_unavailable_reason() in err


def test_gradcheck_on_cuda_0_runs_on_the_gpu_module(capsys):
    with backend.use_gpu_module(strict_cupy):
        assert main(["gradcheck", "--device", "cuda:0", "--op", "relu", "--op", "conv2d"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gradient checks on cuda:0")
    assert "2 passed, 0 failed" in out


def test_verbose_tables_follow_the_summary_on_stdout(capsys):
    assert main(["gradcheck", "--op", "relu", "--op", "exp", "-v"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    summary_at = captured.out.index("gradient checks on cpu")
    tables = [captured.out.index(f"gradcheck {name}: PASS") for name in ("relu", "exp")]
    assert summary_at < min(tables) and captured.out.rstrip().endswith("2 passed, 0 failed")


def test_gradcheck_lists_its_checks_and_refuses_unknown_ones(capsys):
    assert main(["gradcheck", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "conv2d" in listed and "LocalResponseNorm" in listed
    assert main(["gradcheck", "--op", "no_such_op"]) == 2
    assert "unknown check(s) ['no_such_op']" in capsys.readouterr().err


def test_selfcheck_lists_its_checks(capsys):
    assert main(["selfcheck", "--list", "--only", "layers/*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "layers     Linear" in lines and not any(line.startswith("gradcheck") for line in lines)
