"""Does the CPU speed depend on the import order? The paper AlexNet's step with minigrad or NumPy imported first.

    python benchmarks/threads.py [--baseline DIR] [--rounds 3] [--steps 5] [--batch-size 32]
                                 [--model alexnet] [--step forward-backward|train] [--keep-freed-memory]
                                 [--keep-thread-variables]

Each case runs in a fresh interpreter, because what matters happens when the libraries load:
- "minigrad first": `import minigrad` and then `import numpy`;
- "NumPy first": `import numpy` and then `import minigrad`, as a learner's notebook does.
For this checkout and, with --baseline DIR, for another checkout of minigrad (e.g. the code before a change),
so four cases. A round runs every case once, in an order that alternates from round to round, so that all
cases see the same background load; each run does two untimed warm-up steps (Numba's compile or cache load,
the first allocations) and then `--steps` timed ones. A step is the forward and backward pass of the model
on a random batch with the cross-entropy loss (`--step forward-backward`), or that plus the paper's SGD update
(`--step train`, what benchmarks/train_step.py times).

Printed: the machine, the load average before and after, then per case the fastest step over all runs, the
median step and the median CPU time of a step (all threads of the process: threads that spin while they wait
add to it), in seconds, and the verdict: NumPy first against minigrad first in each checkout (the goal:
within 3%), and this checkout against the baseline in each order. The fastest step is the figure to compare
on a busy machine (other processes only ever add time); a median far above it says the machine was busy.

The children's environment is this one without OPENBLAS_THREAD_TIMEOUT, OMP_WAIT_POLICY and GOMP_SPINCOUNT,
i.e. what a user has who never set them (--keep-thread-variables passes them on as they are).

    python benchmarks/threads.py --products [--repeat 9] [--batch-size 32]

instead compares, in one process of this checkout, each conv and FC layer's forward + backward with its
products split over minigrad's threads (as the library runs them) and unsplit (each product one call on
OpenBLAS's own threads), alternating the two, and prints fastest and median per layer and their ratio.
That process sets OPENBLAS_THREAD_TIMEOUT=1, so that OpenBLAS's threads sleep right after each unsplit
product: the comparison is of the products themselves, not of what spinning costs the next kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDERS = ("minigrad first", "NumPy first")
THREAD_VARIABLES = ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

# The child: written against the API that both checkouts share (build_model, F.cross_entropy, optim.SGD).
CHILD = """
import json, os, sys, time
checkout, order, model_name, batch, steps, step_kind, keep_freed = sys.argv[1:8]
sys.path.insert(0, checkout)
if order == "NumPy first":
    import numpy as np
    import minigrad
else:
    import minigrad
    import numpy as np
from alexnet.model import build_model
from minigrad import functional as F, optim

if keep_freed == "1":
    minigrad.keep_freed_memory()
load_before = os.getloadavg()[0]
minigrad.manual_seed(0)
model = build_model(model_name)
cfg = model.config
rng = np.random.default_rng(0)
batch = int(batch)
x = minigrad.Tensor(rng.standard_normal((batch, cfg.in_channels, cfg.image_size, cfg.image_size), dtype=np.float32))
y = rng.integers(0, cfg.num_classes, size=batch)
sgd = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) if step_kind == "train" else None

def step():
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    if sgd is not None:
        sgd.step()

for _ in range(2):
    step()
times, cpu = [], []
for _ in range(int(steps)):
    start, start_cpu = time.perf_counter(), time.process_time()
    step()
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
print(json.dumps({"times": times, "cpu": cpu, "load": [load_before, os.getloadavg()[0]]}))
"""


# The --products child: each layer of the paper's net, products split (the library) or not (one call each).
PRODUCTS_CHILD = """
import json, statistics, sys, time
import numpy as np
import minigrad
from minigrad import functional as F
from minigrad.kernels import conv_cpu, matmul_cpu

batch, repeat = int(sys.argv[1]), int(sys.argv[2])
CONVS = {  # input (C, H, W), out channels, kernel, stride, padding, groups
    "conv1": ((3, 227, 227), 96, 11, 4, 0, 1), "conv2": ((96, 27, 27), 256, 5, 1, 2, 2),
    "conv3": ((256, 13, 13), 384, 3, 1, 1, 1), "conv4": ((384, 13, 13), 384, 3, 1, 1, 2),
    "conv5": ((384, 13, 13), 256, 3, 1, 1, 2),
}
FCS = {"fc6": (9216, 4096), "fc7": (4096, 4096), "fc8": (4096, 1000)}
rng = np.random.default_rng(0)
def leaf(shape, grad=True):
    return minigrad.Tensor(rng.standard_normal(shape, dtype=np.float32) * 0.01, requires_grad=grad)
steps = {}
for name, (shape, out, k, s, p, g) in CONVS.items():
    x, w, b = leaf((batch, *shape), grad=name != "conv1"), leaf((out, shape[0] // g, k, k)), leaf((out,))
    steps[name] = lambda x=x, w=w, b=b, s=s, p=p, g=g: F.conv2d(x, w, b, stride=s, padding=p, groups=g).sum().backward()
for name, (n_in, n_out) in FCS.items():
    x, w, b = leaf((batch, n_in)), leaf((n_out, n_in)), leaf((n_out,))
    steps[name] = lambda x=x, w=w, b=b: F.linear(x, w, b).sum().backward()
split = {module: module.split_over_cores for module in (conv_cpu, matmul_cpu)}
def unsplit(count, body, workers=None):
    return [body(0, count)]
def timed(step, splitting):
    for module, function in split.items():
        module.split_over_cores = function if splitting else unsplit
    start = time.perf_counter()
    step()
    return time.perf_counter() - start
for name, step in steps.items():
    times = {True: [], False: []}
    for splitting in (True, False):
        timed(step, splitting)
    for _ in range(repeat):
        for splitting in (True, False):
            times[splitting].append(timed(step, splitting))
    print(json.dumps({"layer": name, "split": times[True], "unsplit": times[False]}), flush=True)
"""


def compare_products(args: argparse.Namespace) -> None:
    """Each conv and FC layer with its products split and unsplit, alternated in one process (see --products)."""
    env = {**os.environ, "OPENBLAS_THREAD_TIMEOUT": "1"}
    env.pop("PYTHONPATH", None)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; batch {args.batch_size}, {args.repeat} alternated pairs")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")
    print(f"{'layer':<6} {'split ms':>9} {'median':>8} {'unsplit ms':>11} {'median':>8} {'split/unsplit':>14}")
    command = [sys.executable, "-c", PRODUCTS_CHILD, str(args.batch_size), str(args.repeat)]
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            row = json.loads(line)
            fast = {kind: 1e3 * min(row[kind]) for kind in ("split", "unsplit")}
            median = {kind: 1e3 * statistics.median(row[kind]) for kind in ("split", "unsplit")}
            print(
                f"{row['layer']:<6} {fast['split']:9.1f} {median['split']:8.1f} {fast['unsplit']:11.1f} "
                f"{median['unsplit']:8.1f} {fast['split'] / fast['unsplit']:8.3f} (min)"
            )
    if proc.returncode != 0:
        raise SystemExit("the --products run failed")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def run_case(checkout: Path, order: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One fresh interpreter: its timed steps (seconds) and the load average at its start and end."""
    argv = [str(checkout), order, args.model, str(args.batch_size), str(args.steps), args.step]
    argv.append("1" if args.keep_freed_memory else "0")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], cwd=checkout, env=env, capture_output=True, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the run for {checkout} ({order}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def case_name(checkout: str, order: str) -> str:
    return f"{checkout}, {order}"


def percent(ratio: float) -> str:
    return f"{ratio:.3f} ({100 * (ratio - 1):+.1f}%)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_header(args: argparse.Namespace, checkouts: dict[str, Path], env: dict[str, str]) -> None:
    cpu = cpu_model()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"model {args.model}, batch {args.batch_size}, step: {args.step}; {args.rounds} rounds x {args.steps} steps")
    for name, path in checkouts.items():
        print(f"{name}: {path}")
    variables = ", ".join(f"{name}={env.get(name, '(unset)')}" for name in THREAD_VARIABLES)
    print(f"the children's thread variables: {variables}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")


def print_results(times: dict[str, list[float]], cpu: dict[str, list[float]], checkouts: dict[str, Path]) -> None:
    print(f"\n{'case':<34} {'fastest s':>10} {'median s':>9} {'med/fast':>8} {'CPU s':>6}  steps")
    fastest = {}
    for name, values in times.items():
        fastest[name] = min(values)
        median = statistics.median(values)
        line = f"{name:<34} {fastest[name]:10.3f} {median:9.3f} {median / fastest[name]:8.2f}"
        print(f"{line} {statistics.median(cpu[name]):6.2f}  {len(values)}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\nverdict (ratios of the fastest steps; > 1: slower):")
    for checkout in checkouts:
        ratio = fastest[case_name(checkout, "NumPy first")] / fastest[case_name(checkout, "minigrad first")]
        within = "within 3%" if ratio <= 1.03 else "MORE than 3% slower"
        print(f"  {checkout}: NumPy first / minigrad first = {percent(ratio)}: {within}")
    if "baseline" in checkouts:
        for order in ORDERS:
            ratio = fastest[case_name("this checkout", order)] / fastest[case_name("baseline", order)]
            print(f"  {order}: this checkout / baseline = {percent(ratio)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--baseline", type=Path, help="another checkout of minigrad to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every case (default 3)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run (default 5)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="alexnet", help="alexnet (the paper's), alexnet-small, alexnet-tiny")
    parser.add_argument("--step", choices=("forward-backward", "train"), default="forward-backward")
    parser.add_argument("--keep-freed-memory", action="store_true", help="minigrad.keep_freed_memory() in each run")
    parser.add_argument("--keep-thread-variables", action="store_true", help=f"pass on {', '.join(THREAD_VARIABLES)}")
    parser.add_argument("--products", action="store_true", help="split vs unsplit products per layer, in one process")
    parser.add_argument("--repeat", type=int, default=9, help="alternated pairs per layer with --products (default 9)")
    args = parser.parse_args()
    if args.products:
        compare_products(args)
        return

    checkouts = {"this checkout": ROOT}
    if args.baseline is not None:
        if not (args.baseline / "minigrad" / "__init__.py").exists():
            parser.error(f"--baseline {args.baseline}: no minigrad package there")
        checkouts["baseline"] = args.baseline.resolve()
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # each child puts its own checkout first on sys.path
    if not args.keep_thread_variables:
        for name in THREAD_VARIABLES:
            env.pop(name, None)
    print_header(args, checkouts, env)

    cases = [(checkout, order) for checkout in checkouts for order in ORDERS]
    times: dict[str, list[float]] = {case_name(*case): [] for case in cases}
    cpu: dict[str, list[float]] = {case_name(*case): [] for case in cases}
    for round_index in range(args.rounds):
        order_of_cases = cases if round_index % 2 == 0 else cases[::-1]
        for checkout, order in order_of_cases:
            result = run_case(checkouts[checkout], order, args, env)
            times[case_name(checkout, order)] += result["times"]
            cpu[case_name(checkout, order)] += result["cpu"]
            load = " -> ".join(f"{v:.1f}" for v in result["load"])
            print(
                f"round {round_index + 1}: {case_name(checkout, order):<34} fastest {min(result['times']):.3f} s "
                f"(load {load})",
                flush=True,
            )
    print_results(times, cpu, checkouts)


if __name__ == "__main__":
    main()
