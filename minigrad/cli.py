"""The `minigrad` command (also `python -m minigrad`).

minigrad gradcheck [--device cpu|gpu|cuda:N] [--op NAME] [--list] [-v]
minigrad selfcheck [--device gpu|cuda:N|cpu] [--json FILE] [--only PATTERN] [--list] [--plugin MODULE:FUNC]
minigrad --version
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from minigrad import backend

GRADCHECK_EXAMPLES = """examples:
  minigrad gradcheck                      every op and layer on the CPU
  minigrad gradcheck --device cuda:0      the same on the first GPU
  minigrad gradcheck --op conv2d --op max_pool2d -v   two checks, with each input's errors
  minigrad gradcheck --list               the names of the checks
"""

SELFCHECK_EXAMPLES = """examples:
  minigrad selfcheck                      is the GPU path working here? (exit 3 and the reason when no GPU is usable)
  minigrad selfcheck --json gpu.json      also write every result as JSON
  minigrad selfcheck --device cpu         the same checks on the CPU, smaller (seconds)
  minigrad selfcheck --only 'layers/*' --only 'alexnet*'   some groups or checks only (shell patterns)

exit status: 0 every check passed (skipped ones are fine), 1 a check failed, 2 a usage error,
3 no GPU is usable (the report says why: no CuPy, no driver, a failed test operation).
"""


def _device(text: str) -> str:
    """argparse type of --device: the names `alexnet` accepts too ('cpu', 'gpu', 'cuda', 'cuda:N')."""
    try:
        return str(backend.Device(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _gradcheck(args: argparse.Namespace) -> int:
    from minigrad.checks import CHECKS, run_check
    from minigrad.gradcheck import format_table

    if args.list:
        for check in CHECKS.values():
            print(f"{check.name:<28} {check.kind}")
        return 0
    device = backend.Device(args.device)
    if device.kind == "gpu" and not backend.gpu_available():
        print(
            f"error: --device {args.device}, but no GPU is usable: {backend.gpu_unavailable_reason()}", file=sys.stderr
        )
        return 2
    names = args.op or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"error: unknown check(s) {unknown}; `minigrad gradcheck --list` shows them all", file=sys.stderr)
        return 2
    reports, kinds = [], []
    for name in names:
        report = run_check(name, device)
        reports.append(report)
        kinds.append(CHECKS[name].kind)
    print(f"gradient checks on {device} (float64, central differences)")
    print(format_table(reports, kinds))
    for report in reports:  # the per-input tables after the summary, on stdout like it
        if args.verbose or not report.passed:
            print()
            print(report.table())
    failed = [r.name for r in reports if not r.passed]
    print(f"{len(reports) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _selfcheck(args: argparse.Namespace) -> int:
    from minigrad import selfcheck

    if args.list:
        checks, failures = selfcheck.all_checks(args.plugin)
        for result in failures:
            print(f"{result.group:<10} {result.name:<34} ({result.detail})")
        for check in selfcheck.select(checks, args.only):
            print(f"{check.group:<10} {check.name}")
        return 0
    return selfcheck.selfcheck(args.device, args.json, args.only, args.plugin)


def build_parser() -> argparse.ArgumentParser:
    from minigrad import __version__

    parser = argparse.ArgumentParser(
        prog="minigrad",
        description="Tools for the minigrad autograd engine: gradient checks, and a self-check of the GPU path.",
        epilog="examples:\n  minigrad gradcheck\n  minigrad selfcheck\n  minigrad selfcheck --device cpu\n"
        "run `minigrad COMMAND --help` for each command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"minigrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    g = sub.add_parser(
        "gradcheck",
        help="compare every op's and layer's gradients with finite differences",
        description=(
            "Run the registered gradient checks (every op and every nn layer, small float64 inputs) and print one "
            "row per check with its largest relative error, time and PASS/FAIL. Exits 1 if any check fails."
        ),
        epilog=GRADCHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("--op", action="append", metavar="NAME", help="run only this check (repeatable); default: all")
    g.add_argument("--device", default="cpu", type=_device, help="cpu, gpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--list", action="store_true", help="list the registered checks and exit")
    g.add_argument("-v", "--verbose", action="store_true", help="also print each check's per-input table")
    g.set_defaults(func=_gradcheck)
    s = sub.add_parser(
        "selfcheck",
        help="check that the GPU path works here (or say why not), with a table and optional JSON",
        description=(
            "Print what was found (CuPy, CUDA runtime and driver, the GPU and its memory) or why no GPU is usable; "
            "then gradient-check every op and layer in float64, compare every layer's forward and backward with "
            "the CPU, run the GPU kernels against their generic twins, and run the model checks that installed "
            "packages register (alexnet: train alexnet-tiny and check the loss falls; the paper's net at batch "
            "128: images/s and peak device memory; fp16 and TF32 training against fp32)."
        ),
        epilog=SELFCHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--device", default="gpu", type=_device, help="gpu, cuda, cuda:N or cpu (default: gpu)")
    s.add_argument("--json", metavar="FILE", help="also write the report (environment, every check) as JSON")
    s.add_argument("--only", action="append", metavar="PATTERN", help="run the checks matching GROUP/NAME or NAME")
    s.add_argument("--list", action="store_true", help="list the checks (with --only: those it selects) and exit")
    s.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="also run this function's checks (for a checkout that is not pip-installed: alexnet.selfcheck:checks)",
    )
    s.set_defaults(func=_selfcheck)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
