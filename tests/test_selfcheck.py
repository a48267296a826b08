"""`minigrad selfcheck`: the report, its exit codes, its JSON, the plugin point, and its checks on every backend.

There is no GPU here: the GPU branch runs on the strict CuPy stand-in (layers compared with the CPU), and the
whole command runs on the CPU as `minigrad selfcheck --device cpu` (marked slow: it trains for a few seconds).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import strict_cupy

from minigrad import backend, selfcheck
from minigrad.backend import Device
from minigrad.selfcheck import Context, Outcome, Result, SelfCheck

ROOT = Path(__file__).resolve().parents[1]


def run(device: str = "cpu", only: list[str] | None = None, **kwargs) -> tuple[int, str]:
    """selfcheck() with its printed report captured."""
    out = io.StringIO()
    code = selfcheck.selfcheck(device, only=only, out=out, **kwargs)
    return code, out.getvalue()


def rows(text: str) -> dict[str, str]:
    """'group/name' -> status (PASS, FAIL, SKIP) from the printed table."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        for status in ("PASS", "FAIL", "SKIP"):
            if status in parts:
                group, rest = line[:10].strip(), line[11:45].strip()
                found[f"{group}/{rest}"] = status
    return found


# ----------------------------------------------------------------------------- no GPU


def test_without_a_gpu_it_says_why_and_exits_3(tmp_path):
    if backend.gpu_available():
        pytest.skip("a GPU is usable here")
    report = tmp_path / "report.json"
    code, text = run("gpu", json_path=report)
    assert code == selfcheck.EXIT_NO_GPU == 3
    assert backend.gpu_unavailable_reason() in text
    assert "nothing was checked" in text and "--device cpu" in text
    saved = json.loads(report.read_text())
    assert saved["exit_code"] == 3 and saved["checks"] == []
    assert saved["environment"]["gpu"]["usable"] is False
    assert saved["environment"]["gpu"]["reason"] == backend.gpu_unavailable_reason()


def test_the_command_exits_3_without_a_gpu():
    if backend.gpu_available():
        pytest.skip("a GPU is usable here")
    proc = subprocess.run(
        [sys.executable, "-m", "minigrad", "selfcheck"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3, proc.stderr
    assert "no GPU is usable" in proc.stdout


# ----------------------------------------------------------------------------- the checks, on the CPU and the stand-in


def test_on_the_cpu_layers_are_compared_with_the_generic_kernels():
    code, text = run("cpu", only=["layers/*", "gradcheck/conv2d", "gradcheck/LocalResponseNorm", "kernels/*"])
    found = rows(text)
    assert code == 0, text
    assert found["gradcheck/conv2d"] == "PASS" and found["gradcheck/LocalResponseNorm"] == "PASS"
    assert all(found[f"layers/{case.name}"] == "PASS" for case in selfcheck.LAYER_CASES)
    assert found["layers/Dropout (mask rule)"] == "PASS"
    assert "vs the generic kernels" in text
    assert {found[f"kernels/{name}"] for name in selfcheck.KERNEL_CASES} == {"SKIP"}


def test_on_the_stand_in_gpu_layers_are_compared_with_the_cpu():
    with backend.use_gpu_module(strict_cupy):
        code, text = run("gpu", only=["layers/*", "gradcheck/max_pool2d", "kernels/LRN"])
    found = rows(text)
    assert code == 0, text
    assert all(found[f"layers/{case.name}"] == "PASS" for case in selfcheck.LAYER_CASES)
    assert "vs the CPU" in text
    assert found["kernels/LRN"] == "SKIP" and "numba.cuda cannot run here" in text


def test_a_layer_that_disagrees_with_its_reference_fails(monkeypatch):
    real = selfcheck._reference_arrays

    def off_by_a_bit(case, device, seed):
        arrays = real(case, device, seed)
        arrays[0] = arrays[0] * np.float32(1.001)  # the forward output, 1e-3 off
        return arrays

    monkeypatch.setattr(selfcheck, "_reference_arrays", off_by_a_bit)
    code, text = run("cpu", only=["layers/Linear"])
    assert code == 1
    assert rows(text)["layers/Linear"] == "FAIL" and "worst forward 1.0e-03" in text


def test_relative_error_is_relative_to_the_expected_array_scale():
    assert selfcheck.relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert selfcheck.relative_error(np.array([1.0, 2.2]), np.array([1.0, 2.0])) == pytest.approx(0.1)
    assert selfcheck.relative_error(np.zeros(2), np.zeros(2)) == 0.0
    assert selfcheck.relative_error(np.zeros(2), np.zeros(3)) == float("inf")


# ----------------------------------------------------------------------------- statuses, exit codes, JSON, selection


def demo_checks() -> list[SelfCheck]:
    """One check of each kind of outcome (the plugin function the fake entry point names)."""

    def crash(context: Context) -> Outcome:
        return Outcome(1 / 0 > 0)

    return [
        SelfCheck("passes", "demo", lambda c: Outcome(True, f"on {c.device}, quick={c.quick}", {"value": 1.5})),
        SelfCheck("fails", "demo", lambda c: Outcome(False, "wrong")),
        SelfCheck("skips", "demo", lambda c: Outcome(None, "not here")),
        SelfCheck("crashes", "demo", crash),
    ]


def fake_entry_points(monkeypatch, *values: str) -> None:
    """Make the entry-point group hold these 'module:function' targets only."""
    eps = [EntryPoint(f"plugin{i}", value, selfcheck.ENTRY_POINT_GROUP) for i, value in enumerate(values)]
    monkeypatch.setattr(selfcheck, "entry_points", lambda group: eps if group == selfcheck.ENTRY_POINT_GROUP else [])


def test_each_outcome_has_its_status_and_a_failure_exits_1(monkeypatch, tmp_path):
    fake_entry_points(monkeypatch, "test_selfcheck:demo_checks")
    report = tmp_path / "report.json"
    code, text = run("cpu", only=["demo/*"], json_path=report)
    assert code == selfcheck.EXIT_FAILED == 1
    assert rows(text) == {"demo/passes": "PASS", "demo/fails": "FAIL", "demo/skips": "SKIP", "demo/crashes": "FAIL"}
    assert "2 passed" not in text and "1 passed, 2 failed, 1 skipped" in text
    saved = json.loads(report.read_text())
    assert (saved["passed"], saved["failed"], saved["skipped"], saved["exit_code"]) == (1, 2, 1, 1)
    by_name = {c["name"]: c for c in saved["checks"]}
    assert by_name["passes"]["detail"] == "on cpu, quick=True" and by_name["passes"]["metrics"] == {"value": 1.5}
    assert by_name["crashes"]["detail"].startswith("ZeroDivisionError: division by zero (test_selfcheck.py:")
    assert saved["environment"]["device"] == "cpu" and saved["environment"]["gpu"] is None


def test_only_the_passing_and_skipped_checks_exit_0(monkeypatch):
    fake_entry_points(monkeypatch, "test_selfcheck:demo_checks")
    code, text = run("cpu", only=["demo/passes", "skips"])
    assert code == 0 and rows(text) == {"demo/passes": "PASS", "demo/skips": "SKIP"}


def test_a_plugin_that_does_not_load_is_a_failed_row(monkeypatch):
    fake_entry_points(monkeypatch, "no_such_module:checks", "test_selfcheck:no_such_function")
    checks, failures = selfcheck.plugin_checks(["missing-colon"])
    assert checks == []
    details = " | ".join(r.detail for r in failures)
    assert [r.status for r in failures] == ["fail"] * 3
    assert "ModuleNotFoundError" in details and "AttributeError" in details and "MODULE:FUNCTION" in details
    code, text = run("cpu", only=["plugins/*"])
    assert code == 1 and "could not load" in text


def test_a_plugin_named_twice_runs_once(monkeypatch):
    fake_entry_points(monkeypatch, "test_selfcheck:demo_checks")
    checks, failures = selfcheck.plugin_checks(["test_selfcheck:demo_checks"])
    assert failures == [] and [c.name for c in checks] == ["passes", "fails", "skips", "crashes"]


def test_no_registered_plugin_is_said(monkeypatch):
    fake_entry_points(monkeypatch)
    checks, failures = selfcheck.plugin_checks()
    assert checks == [] and [r.status for r in failures] == ["skip"]
    assert selfcheck.ENTRY_POINT_GROUP in failures[0].detail


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (None, ["gradcheck/relu", "layers/ReLU", "demo/passes"]),
        (["layers/*"], ["layers/ReLU"]),
        (["relu"], ["gradcheck/relu"]),
        (["*/pass*", "gradcheck/*"], ["gradcheck/relu", "demo/passes"]),
        (["nothing"], []),
    ],
)
def test_only_selects_by_group_and_name_or_name(patterns, expected):
    checks = [
        SelfCheck(name, group, None) for group, name in (("gradcheck", "relu"), ("layers", "ReLU"), ("demo", "passes"))
    ]
    assert [f"{c.group}/{c.name}" for c in selfcheck.select(checks, patterns)] == expected


def test_a_result_row_shows_group_name_status_time_and_detail():
    row = selfcheck.format_row(Result("layers", "Linear", "pass", "vs the CPU: 1e-7", 0.25))
    assert row.split() == ["layers", "Linear", "PASS", "0.25", "s", "vs", "the", "CPU:", "1e-7"]


def test_the_header_names_the_gpu_or_why_there_is_none():
    env = selfcheck.environment(Device("cpu"))
    assert env["gpu"] is None and selfcheck.environment_lines(env)[0].startswith("minigrad ")
    gpu = {
        "usable": True, "reason": None, "cupy": "14.2.0", "cuda_runtime": "13.0", "cuda_driver": "13.1",
        "name": "NVIDIA H200", "compute_capability": "9.0", "memory_total": 150 * 2**30, "memory_free": 140 * 2**30,
    }  # fmt: skip
    lines = selfcheck.environment_lines({**env, "device": "cuda:0", "gpu": gpu})
    assert lines[1] == "CuPy 14.2.0, CUDA runtime 13.0, driver 13.1"
    assert lines[2] == "GPU: NVIDIA H200 (compute capability 9.0), 150.0 GiB (140.0 GiB free)"
    missing = {**gpu, "usable": False, "reason": "CuPy is installed but finds no usable CUDA device", "cupy": None}
    assert selfcheck.environment_lines({**env, "gpu": missing})[1:] == ["no GPU is usable: " + missing["reason"]]


# ----------------------------------------------------------------------------- alexnet's checks


def test_alexnet_registers_its_checks_through_the_entry_point():
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group=selfcheck.ENTRY_POINT_GROUP) if ep.name == "alexnet"]
    assert ep.value == "alexnet.selfcheck:checks"
    names = [c.name for c in ep.load()()]
    assert names == [
        "alexnet-tiny trains",
        "paper net: speed, memory",
        "alexnet-tiny fp16 vs fp32",
        "alexnet-tiny tf32 vs fp32",
    ]


def test_minigrad_does_not_import_alexnet():
    code = "import sys, minigrad.selfcheck, minigrad.cli, minigrad.amp; print('alexnet' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


@pytest.mark.slow
def test_the_whole_selfcheck_passes_on_the_cpu(tmp_path):
    """`minigrad selfcheck --device cpu`: every check, alexnet's included, small enough for the CPU."""
    from minigrad.cli import main

    report = tmp_path / "cpu.json"
    assert main(["selfcheck", "--device", "cpu", "--json", str(report)]) == 0
    saved = json.loads(report.read_text())
    groups = {c["group"] for c in saved["checks"]}
    assert groups == {"gradcheck", "layers", "kernels", "alexnet"}
    by_name = {c["name"]: c for c in saved["checks"]}
    assert by_name["alexnet-tiny trains"]["status"] == "pass"
    assert (
        by_name["alexnet-tiny trains"]["metrics"]["last_loss"] < by_name["alexnet-tiny trains"]["metrics"]["first_loss"]
    )
    assert by_name["paper net: speed, memory"]["metrics"]["images_per_s"] > 0
    assert by_name["alexnet-tiny fp16 vs fp32"]["status"] == "pass"
    assert by_name["alexnet-tiny tf32 vs fp32"]["status"] == "skip"
    assert saved["failed"] == 0 and saved["passed"] >= 70
