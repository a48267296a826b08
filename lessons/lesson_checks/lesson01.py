"""Checks and the graph drawing of lesson 1 (autograd from scratch).

The learner's tiny engine is passed in as functions (`Node`, `add`, `mul`, `tanh`, `total`), so the checks build
random graphs with it and the same graphs with minigrad, and compare the gradients of every leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import minigrad as mg
import minigrad.functional as F

from . import relative_error, report


def random_graph(ops: dict[str, Callable[..., Any]], seed: int, n_leaves: int = 3, n_ops: int = 12, size: int = 4):
    """A random graph of `n_ops` operations on `n_leaves` leaves, built twice: with the lesson's engine
    (`ops`: Node, add, mul, tanh, total) and with minigrad. Operands are drawn from every node made so far,
    so nodes are reused (sometimes twice by one op, as in x * x); the nodes nothing consumes are added up at
    the end, so every leaf reaches the root. Returns (root, leaves, mg_root, mg_leaves)."""
    rng = np.random.default_rng(seed)
    values = [rng.uniform(-1.5, 1.5, size) for _ in range(n_leaves)]
    leaves = [ops["Node"](v.copy()) for v in values]
    mg_leaves = [mg.tensor(v, dtype="float64", requires_grad=True) for v in values]
    nodes, mg_nodes, used = list(leaves), list(mg_leaves), [False] * n_leaves
    mg_ops = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "tanh": F.tanh}
    for _ in range(n_ops):
        kind = str(rng.choice(["add", "mul", "tanh"]))
        arity = 1 if kind == "tanh" else 2
        picks = [int(i) for i in rng.integers(len(nodes), size=arity)]
        for i in picks:
            used[i] = True
        nodes.append(ops[kind](*(nodes[i] for i in picks)))
        mg_nodes.append(mg_ops[kind](*(mg_nodes[i] for i in picks)))
        used.append(False)
    dangling = [i for i, u in enumerate(used) if not u]
    out, mg_out = nodes[dangling[0]], mg_nodes[dangling[0]]
    for i in dangling[1:]:
        out, mg_out = ops["add"](out, nodes[i]), mg_out + mg_nodes[i]
    return ops["total"](out), leaves, mg_out.sum(), mg_leaves


def _reachable(root: Any) -> list[Any]:
    seen, stack, out = set(), [root], []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        stack.extend(node.parents)
    return out


def check_topological_order(topological_order: Callable[[Any], list], ops: dict[str, Callable], graphs: int = 20):
    """Every reachable node exactly once, each after all of its parents, on `graphs` random graphs."""
    edges = bad = 0
    for seed in range(graphs):
        root = random_graph(ops, seed)[0]
        order = list(topological_order(root))
        position = {id(node): i for i, node in enumerate(order)}
        expected = _reachable(root)
        if len(order) != len(expected) or len(position) != len(order) or any(id(n) not in position for n in expected):
            line = f"topological order: {len(order)} nodes, should be the {len(expected)} reachable ones, once each"
            print(line)
            raise AssertionError(line)
        for node in order:
            for parent in node.parents:
                edges += 1
                bad += position[id(parent)] > position[id(node)]
    line = f"topological order: {bad} of {edges} edges point backwards, should be 0"
    print(line)
    if bad:
        raise AssertionError(line)


def check_backward(backward: Callable[[Any], None], ops: dict[str, Callable], graphs: int = 20) -> None:
    """The leaves' gradients from the lesson's backward() equal minigrad's, on `graphs` random graphs."""
    worst = 0.0
    for seed in range(graphs):
        root, leaves, mg_root, mg_leaves = random_graph(ops, seed)
        backward(root)
        mg_root.backward()
        for leaf, mg_leaf in zip(leaves, mg_leaves):
            if leaf.grad is None:
                line = "backward: a leaf got no gradient (.grad is None), but every leaf reaches the root"
                print(line)
                raise AssertionError(line)
            worst = max(worst, relative_error(leaf.grad, mg_leaf.grad.numpy()))
    report(f"backward vs minigrad on {graphs} random graphs", worst, 1e-12)


def _depths(order: list[Any]) -> dict[int, int]:
    depth: dict[int, int] = {}
    for node in order:
        depth[id(node)] = 1 + max((depth[id(p)] for p in node.parents), default=-1)
    return depth


def draw_graph(order: list[Any], names: dict[int, str], ax: Any) -> None:
    """Draw a scalar graph on a matplotlib axis: leaves on the left, each node one column right of its deepest
    parent, an arrow per edge, and each node's name, value and gradient. `order` is a topological order,
    `names` maps id(node) to a label."""
    depth = _depths(order)
    columns: dict[int, list[Any]] = {}
    for node in order:
        columns.setdefault(depth[id(node)], []).append(node)
    where = {}
    for x, column in columns.items():
        for k, node in enumerate(column):
            where[id(node)] = (x, (len(column) - 1) / 2 - k)
    for node in order:
        for parent in node.parents:
            skips = depth[id(node)] - depth[id(parent)] > 1  # bend the edges that jump over a column
            ax.annotate(
                "",
                xy=where[id(node)],
                xytext=where[id(parent)],
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "0.45",
                    "shrinkA": 28,
                    "shrinkB": 28,
                    "connectionstyle": f"arc3,rad={0.35 if skips else 0.0}",
                },
            )
    for node in order:
        grad = "None" if node.grad is None else f"{float(node.grad):.3f}"
        label = f"{names.get(id(node), node.op)}\nvalue {float(node.value):.3f}\ngrad {grad}"
        colour = "#dbe9f6" if not node.parents else "#fbe3c9"
        ax.text(*where[id(node)], label, ha="center", va="center", fontsize=8, bbox={"boxstyle": "round", "fc": colour})
    xs = [p[0] for p in where.values()]
    ys = [p[1] for p in where.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_axis_off()
