"""Specification of `minigrad.kernels.dispatch` (which version of a kernel runs, how `run` splits a compiled
loop over the cores, the compile notice) and of `minigrad.kernels.shapes` (the window geometry every layer
shares).

The notice: when Numba compiles one of minigrad's kernels (not when it loads one from its on-disk cache),
one line goes to stderr, once per process, unless MINIGRAD_QUIET=1 or `show_compile_notice(False)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from minigrad import kernels as K
from minigrad.kernels import dispatch, shapes
from minigrad.kernels.cpu_threads import _parts

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "minigrad: compiling the CPU kernels"


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, (3, 3)), ((2, 5), (2, 5)), ([0, 1], (0, 1)), (np.int64(4), (4, 4)), ((np.int32(1), 2), (1, 2))],
)
def test_pair_takes_an_int_or_a_pair_of_ints(value, expected):
    got = shapes.pair(value, "stride")
    assert got == expected and all(type(v) is int for v in got)


@pytest.mark.parametrize("value", [-1, (1, -2), (1, 2, 3), (2,), 2.0, (2.5, 1), "ab", None])
def test_pair_refuses_anything_else_naming_the_argument(value):
    with pytest.raises(ValueError, match="padding must be an int or a pair of non-negative ints"):
        shapes.pair(value, "padding")


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [(227, 11, 4, 0, 55), (27, 5, 1, 2, 27), (13, 3, 2, 0, 6), (4, 4, 1, 0, 1), (3, 5, 1, 0, -1)],
)
def test_output_size_counts_the_window_positions(size, kernel, stride, padding, expected):
    assert shapes.output_size(size, kernel, stride, padding) == expected
    positions = [p for p in range(-padding, size + padding - kernel + 1) if (p + padding) % stride == 0]
    assert max(expected, 0) == len(positions)  # the formula, counted by hand


def test_output_hw_names_the_op_when_no_window_fits():
    assert shapes.output_hw("conv2d", (227, 227), (11, 11), (4, 4), (0, 0)) == (55, 55)
    with pytest.raises(ValueError, match=r"max_pool2d: kernel \(3, 3\) does not fit .* \(2, 5\) padded by \(0, 0\)"):
        shapes.output_hw("max_pool2d", (2, 5), (3, 3), (1, 1), (0, 0))


# ----------------------------------------------------------------------------- fastest


def twins(calls):
    def numba_version(a, scale=1):
        calls.append("numba")
        return a * scale

    def generic_version(a, scale=1):
        calls.append("generic")
        return a * scale

    return numba_version, generic_version


@pytest.mark.parametrize(
    ("array", "expected"),
    [(np.ones(3, np.float32), "numba"), (np.ones(3, np.float16), "generic"), (np.ones(3, np.int64), "generic")],
    ids=["float32", "float16", "int64"],
)
def test_fastest_picks_numba_for_numpy_floats_only(array, expected, monkeypatch):
    monkeypatch.delenv("MINIGRAD_DISABLE_NUMBA", raising=False)
    if not K.numba_available():
        pytest.skip("Numba is not usable here")
    calls = []
    result = dispatch.fastest(*twins(calls), array, scale=2, arrays=(array,))
    np.testing.assert_array_equal(result, array * 2)
    assert calls == [expected]


def test_fastest_takes_the_generic_version_without_a_numba_one_or_when_forced():
    calls = []
    x = np.ones(3, np.float32)
    dispatch.fastest(None, twins(calls)[1], x, arrays=(x,))
    with K.force_generic():
        dispatch.fastest(*twins(calls), x, arrays=(x,))
    assert calls == ["generic", "generic"]


def test_fastest_falls_back_when_the_numba_version_finds_numba_broken():
    calls = []

    def broken(a):
        calls.append("numba")
        raise K.NumbaUnavailable("pretend Numba broke")

    x = np.ones(3, np.float64)
    result = dispatch.fastest(broken, twins(calls)[1], x, arrays=(x,))
    np.testing.assert_array_equal(result, x)
    assert calls[-1] == "generic"


# ----------------------------------------------------------------------------- run: a compiled loop in parts


def recording_kernel(calls, together=None):
    """A stand-in for a compiled kernel: records (first argument's size, start, stop, thread) per call; with a
    barrier `together`, every call waits there until all parts run at once."""

    def kernel(array, start, stop):
        calls.append((array.size, start, stop, threading.get_ident()))
        if together is not None:
            together.wait(timeout=30)

    return kernel


@pytest.mark.parametrize("cores", [2, 3])
@pytest.mark.parametrize("over", [3, 7, 40])
def test_run_hands_each_core_one_range_of_the_loop(monkeypatch, cores, over):
    monkeypatch.setattr(dispatch, "cpu_cores", lambda: cores)
    calls = []
    kernel = recording_kernel(calls, threading.Barrier(cores))  # passed only if the parts run at the same time
    dispatch.run(kernel, np.zeros(dispatch.SERIAL_BELOW, np.float32), over=over)
    assert sorted((start, stop) for _, start, stop, _ in calls) == _parts(over, cores)
    assert len({thread for *_, thread in calls}) == cores


def test_run_keeps_a_small_loop_in_the_calling_thread(monkeypatch):
    """Below SERIAL_BELOW elements in the largest array, waking another thread costs more than the work."""
    monkeypatch.setattr(dispatch, "cpu_cores", lambda: 4)
    calls = []
    dispatch.run(recording_kernel(calls), np.zeros(dispatch.SERIAL_BELOW - 1, np.float32), over=40)
    assert calls == [(dispatch.SERIAL_BELOW - 1, 0, 40, threading.get_ident())]


def test_a_kernel_failing_in_one_part_switches_numba_off(monkeypatch):
    monkeypatch.setattr(dispatch, "cpu_cores", lambda: 2)
    monkeypatch.setattr(dispatch, "_failure", None)
    monkeypatch.setattr(dispatch, "_warned", False)

    def kernel(array, start, stop):
        if start > 0:
            raise RuntimeError("pretend the JIT failed in the second part")

    with pytest.warns(RuntimeWarning, match="Numba is unavailable"), pytest.raises(K.NumbaUnavailable):
        dispatch.run(kernel, np.zeros(dispatch.SERIAL_BELOW, np.float32), over=4)
    assert not K.numba_available()


def kernel_calls():
    """Each Numba kernel's wrapper on inputs that reach every kernel: name -> function of the inputs."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 11, 11), dtype=np.float32)
    same_cols = K.im2col_numba(x, 3, 3, 1, 1)  # stride 1, OW == W: the shifted-run kernels
    strided_cols = K.im2col_numba(x, 3, 3, 2, 1)  # the phase split and the per-row kernels
    wide = rng.standard_normal((2, 20, 9, 9), dtype=np.float32)  # enough channels for the shifted col2im
    wide_cols = K.im2col_numba(wide, 3, 3, 1, 1)
    pooled, argmax = K.max_pool2d_forward_numba(x, 3, 3, 2, 1)
    _, scale = K.lrn_forward_numba(x, 5, 1e-2, 0.75, 2.0)

    def sgd():
        w, grad, velocity = (rng.standard_normal(5000).astype(np.float64) for _ in range(3))
        K.sgd_momentum_step_numba(w, grad, velocity, 0.9, 5e-4, 0.01)
        return w, velocity

    return {
        "im2col, stride 1": lambda: K.im2col_numba(x, 3, 3, 1, 1),
        "im2col, stride 2": lambda: K.im2col_numba(x, 3, 3, 2, 1),
        "col2im, stride 1": lambda: K.col2im_numba(same_cols, x.shape, 3, 3, 1, 1),
        "col2im, stride 2": lambda: K.col2im_numba(strided_cols, x.shape, 3, 3, 2, 1),
        "col2im, 20 channels": lambda: K.col2im_numba(wide_cols, wide.shape, 3, 3, 1, 1),
        "max_pool2d": lambda: K.max_pool2d_forward_numba(x, 3, 3, 2, 1),
        "max_pool2d backward": lambda: K.max_pool2d_backward_numba(pooled, argmax, x.shape, 3, 3, 2, 1),
        "lrn": lambda: K.lrn_forward_numba(x, 5, 1e-2, 0.75, 2.0),
        "lrn backward": lambda: K.lrn_backward_numba(x, x, scale, 5, 1e-2, 0.75),
        "sgd": sgd,
    }


@pytest.mark.skipif(not K.numba_available(), reason="Numba is not usable here")
@pytest.mark.parametrize("cores", [2, 3, 5])
@pytest.mark.parametrize("name", list(kernel_calls()))
def test_every_kernel_in_parts_gives_the_bits_it_gives_in_one(monkeypatch, name, cores):
    """Tasks never share an output element, so splitting a kernel's loop changes nothing, to the last bit."""
    monkeypatch.setattr(dispatch, "SERIAL_BELOW", 0)  # these small inputs split too
    monkeypatch.setattr(dispatch, "cpu_cores", lambda: 1)
    whole = kernel_calls()[name]()
    monkeypatch.setattr(dispatch, "cpu_cores", lambda: cores)
    split = kernel_calls()[name]()
    for got, want in zip(as_tuple(split), as_tuple(whole)):
        np.testing.assert_array_equal(got, want)


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


# ----------------------------------------------------------------------------- the compile notice


@pytest.fixture
def fresh_notice(monkeypatch):
    """The notice not yet shown in this process, enabled, and MINIGRAD_QUIET unset."""
    monkeypatch.setattr(dispatch, "_notice_shown", False)
    monkeypatch.setattr(dispatch, "_notice_enabled", True)
    monkeypatch.delenv("MINIGRAD_QUIET", raising=False)


def test_the_notice_names_the_op_and_comes_once_per_process(fresh_notice, capsys):
    from minigrad.kernels import lrn, pooling

    dispatch._announce_compile(pooling.max_pool_forward_kernel)
    dispatch._announce_compile(lrn.lrn_forward_kernel)  # a second kernel: no second line
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(NOTICE)
    assert "max_pool2d" in captured.err and "cached afterwards" in captured.err


def test_the_notice_ignores_other_numba_code_and_kernel_helpers(fresh_notice, capsys):
    from minigrad.kernels import lrn

    dispatch._announce_compile(object())  # someone else's dispatcher
    dispatch._announce_compile(lrn._window_add)  # compiled inside a kernel, which announced already
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("how", ["MINIGRAD_QUIET=1", "show_compile_notice(False)"])
def test_the_notice_can_be_silenced(fresh_notice, capsys, monkeypatch, how):
    from minigrad.kernels import sgd

    if how.startswith("MINIGRAD_QUIET"):
        monkeypatch.setenv("MINIGRAD_QUIET", "1")
    else:
        K.show_compile_notice(False)
    dispatch._announce_compile(sgd.sgd_momentum_kernel)
    assert capsys.readouterr().err == ""
    assert not dispatch._notice_shown  # silenced, not used up: turning it back on shows the next compile


NOTICE_SCRIPT = """
import sys
import numpy as np
from minigrad import kernels as K
for dtype in sys.argv[1:]:
    print("calling the float" + dtype + " update", file=sys.stderr, flush=True)
    w, g, v = (np.ones(8, "float" + dtype) for _ in range(3))
    K.sgd_momentum_step(w, g, v, 0.9, 1e-4, 0.01)
    assert w[0] != 1
"""


def run_fresh(cache_dir, *dtypes, quiet=False):
    """stderr of a new interpreter that runs the SGD kernel in each dtype, with Numba's cache in cache_dir."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env.pop("MINIGRAD_DISABLE_NUMBA", None)
    env.pop("MINIGRAD_QUIET", None)
    if quiet:
        env["MINIGRAD_QUIET"] = "1"
    command = [sys.executable, "-c", NOTICE_SCRIPT, *dtypes]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


@pytest.mark.skipif(not K.numba_available(), reason="Numba is not usable here")
def test_the_notice_comes_with_a_real_compile_and_never_with_a_cache_load(tmp_path):
    """Three fresh interpreters sharing one empty Numba cache: the first compiles float32 quietly, the second
    loads float32 from the cache (no notice) and compiles float64 (one notice, before that call returns), the
    third loads both (no notice)."""
    assert run_fresh(tmp_path, "32", quiet=True) == ["calling the float32 update"]
    lines = run_fresh(tmp_path, "32", "64")
    assert lines[:2] == ["calling the float32 update", "calling the float64 update"]
    assert len(lines) == 3 and lines[2].startswith(NOTICE) and "the SGD update" in lines[2]
    assert run_fresh(tmp_path, "32", "64") == ["calling the float32 update", "calling the float64 update"]
