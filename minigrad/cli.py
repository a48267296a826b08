"""The `minigrad` command: `minigrad gradcheck` checks every op and layer against finite differences."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from minigrad import backend


def _gradcheck(args: argparse.Namespace) -> int:
    from minigrad.checks import CHECKS, run_check
    from minigrad.gradcheck import format_table

    if args.list:
        for check in CHECKS.values():
            print(f"{check.name:<28} {check.kind}")
        return 0
    if args.device == "gpu" and not backend.gpu_available():
        print(f"error: --device gpu, but no GPU is usable: {backend.gpu_unavailable_reason()}", file=sys.stderr)
        return 2
    names = args.op or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"error: unknown check(s) {unknown}; `minigrad gradcheck --list` shows them all", file=sys.stderr)
        return 2
    reports, kinds = [], []
    for name in names:
        report = run_check(name, args.device)
        reports.append(report)
        kinds.append(CHECKS[name].kind)
        if args.verbose or not report.passed:
            print(report.table(), file=sys.stderr)
    print(f"gradient checks on {backend.Device(args.device)} (float64, central differences)")
    print(format_table(reports, kinds))
    failed = [r.name for r in reports if not r.passed]
    print(f"{len(reports) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minigrad", description="Tools for the minigrad autograd engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser(
        "gradcheck",
        help="compare every op's and layer's gradients with finite differences",
        description=(
            "Run the registered gradient checks (every op and every nn layer, small float64 inputs) and print one "
            "row per check with its largest relative error, time and PASS/FAIL. Exits 1 if any check fails."
        ),
    )
    g.add_argument("--op", action="append", metavar="NAME", help="run only this check (repeatable); default: all")
    g.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="where to run the checks (default: cpu)")
    g.add_argument("--list", action="store_true", help="list the registered checks and exit")
    g.add_argument("-v", "--verbose", action="store_true", help="also print each check's per-input table")
    g.set_defaults(func=_gradcheck)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
