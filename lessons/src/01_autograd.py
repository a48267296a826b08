# %% [markdown]
# # Lesson 1: Autograd from scratch
#
# This is the first of ten lessons that build up to the 2012 AlexNet (Krizhevsky, Sutskever & Hinton) on
# `minigrad`, the small NumPy/CuPy engine in this repository. In this lesson you write the heart of it yourself:
# reverse-mode automatic differentiation.
#
# **Goals**
#
# 1. build a tiny autograd engine in thirty lines: each operation records its inputs and how to pass a
#    gradient back to them;
# 2. write `backward()`: a **topological sort** of the recorded graph, then one backward step per node in
#    reverse order, adding up the gradients of nodes that are used more than once;
# 3. check it against `minigrad` on random graphs that reuse nodes;
# 4. map each piece onto `minigrad`: `Function.forward`/`Function.backward`, `Function.apply`, and
#    `Tensor.backward()`.
#
# You need NumPy and the chain rule. Run the cells from top to bottom; an **exercise** cell is followed by a
# **check** cell that prints one line and fails loudly when the exercise is wrong. In `exercises/` the exercise
# cells hold `raise NotImplementedError`: that is your copy.

# %%
import sys

import matplotlib.pyplot as plt
import numpy as np
from lesson_checks import lesson01, report_runtime, start_clock

import minigrad as mg
import minigrad.functional as F

start_clock()

# %% [markdown]
# ## 1. A graph of operations
#
# Take `L = tanh(x * y) * (x * y + x)` at `x = 0.5, y = -1.5`. The computation is a graph: `x` and `y` are
# leaves, `a = x * y` is used twice, and every other node is made by one operation from its **parents**.
# To differentiate `L` we need, for every node `n`, the number `dL/dn` (its **gradient**). The chain rule
# says how to get it from the nodes that consume `n`: if `n` feeds consumers `c1, c2, ...`, then
#
# `dL/dn = sum over consumers c of  dL/dc * dc/dn`.
#
# So each operation only has to know its *local* derivatives `dc/dn`. For `c = a * b`: `dc/da = b`,
# `dc/db = a`. For `c = a + b`: both are 1. For `c = tanh(a)`: `1 - c^2`. Our engine stores, with every
# node it makes, a small function `backward_fn` that turns `dL/dc` into `(dL/da, dL/db)`.
#
# The values are NumPy arrays (a number is a 0-dimensional array), and the operations are elementwise,
# so the same rules hold entry by entry.


# %%
class Node:
    """A value in the graph: its array, the nodes it was made from, and how to send a gradient back to them."""

    def __init__(self, value, parents=(), backward_fn=None, op="leaf"):
        self.value = np.asarray(value, dtype=np.float64)
        self.parents = parents  # the nodes this one was computed from
        self.backward_fn = backward_fn  # dL/d(self) -> (dL/d(parent) for each parent)
        self.op = op
        self.grad = None  # dL/d(self), filled in by backward()


def add(a, b):
    return Node(a.value + b.value, (a, b), lambda g: (g, g), "+")


def mul(a, b):
    return Node(a.value * b.value, (a, b), lambda g: (g * b.value, g * a.value), "*")


def tanh(a):
    t = np.tanh(a.value)
    return Node(t, (a,), lambda g: (g * (1 - t * t),), "tanh")


def total(a):
    """The sum of all entries: a scalar. Each entry's local derivative is 1."""
    return Node(a.value.sum(), (a,), lambda g: (np.full_like(a.value, g),), "sum")


x, y = Node(0.5), Node(-1.5)
a = mul(x, y)
b = tanh(a)
c = add(a, x)
L = mul(b, c)
print("L =", float(L.value))
assert np.isclose(L.value, np.tanh(-0.75) * (-0.75 + 0.5))

# %% [markdown]
# ## 2. The order of the backward pass
#
# Start at `L` with `dL/dL = 1` and walk back. A node may only pass its gradient on once it is **complete**,
# i.e. once every consumer has sent its part: `a` feeds both `b` and `c`, so `a` must wait for both. An order
# in which every node comes after all of its parents is a **topological order**; walking it in reverse visits
# every node after all of its consumers.
#
# A depth-first search gives one: visit a node's parents first (recursively), then append the node. A `seen`
# set makes sure each node is listed once, however many paths lead to it.
#
# Then `backward(root)`:
#
# 1. set every reachable node's `grad` to zeros of its value's shape, and the root's to ones;
# 2. for each node in **reversed** topological order that has a `backward_fn`: call it with the node's
#    gradient, and **add** each result to the matching parent's `grad` (add, never overwrite: a parent used twice
#    gets both contributions; `x * x` passes `g * x` to the same parent twice).


# %% [exercise]
def topological_order(root):
    """Every node reachable from root (through .parents), each exactly once, each after all of its parents."""
    # BEGIN SOLUTION
    order, seen = [], set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.parents:
            visit(parent)
        order.append(node)

    visit(root)
    return order
    # END SOLUTION


def backward(root):
    """Fill in .grad = dL/d(node) for every node reachable from root, where L = root (a scalar)."""
    # BEGIN SOLUTION
    order = topological_order(root)
    for node in order:
        node.grad = np.zeros_like(node.value)
    root.grad = np.ones_like(root.value)
    for node in reversed(order):
        if node.backward_fn is None:
            continue  # a leaf: nothing further back
        for parent, g in zip(node.parents, node.backward_fn(node.grad)):
            parent.grad = parent.grad + g
    # END SOLUTION


# %% [markdown]
# The checks build twenty random graphs with your engine (three array leaves, twelve random `+`, `*`, `tanh`
# on nodes drawn from everything made so far, so nodes are reused) and the same graphs with `minigrad`, then
# compare the order and every leaf's gradient.

# %% [check]
ops = {"Node": Node, "add": add, "mul": mul, "tanh": tanh, "total": total}
lesson01.check_topological_order(topological_order, ops)
lesson01.check_backward(backward, ops)

# %% [markdown]
# ## 3. The graph with its gradients
#
# Back to `L = tanh(x * y) * (x * y + x)`. By hand: `dL/dx = y * (1 - b^2) * c + b * (y + 1)` and
# `dL/dy = x * (1 - b^2) * c + b * x`. Your `backward` gives the same numbers, and the picture shows every
# node's value and gradient: the gradient of `a` is the sum of what `b` and `c` sent it.

# %%
backward(L)
bv, cv = np.tanh(-0.75), -0.75 + 0.5
dx = -1.5 * (1 - bv**2) * cv + bv * (-1.5 + 1)
dy = 0.5 * (1 - bv**2) * cv + bv * 0.5
print(f"dL/dx = {float(x.grad):.6f} (by hand {dx:.6f}),  dL/dy = {float(y.grad):.6f} (by hand {dy:.6f})")
assert np.isclose(x.grad, dx) and np.isclose(y.grad, dy)
assert np.isclose(a.grad, b.grad * (1 - bv**2) + c.grad)  # a's two consumers, added up

names = {id(x): "x", id(y): "y", id(a): "a = x*y", id(b): "b = tanh(a)", id(c): "c = a + x", id(L): "L = b*c"}
fig, ax = plt.subplots(figsize=(9, 3.2))
lesson01.draw_graph(topological_order(L), names, ax)
ax.set_title("values and gradients dL/d(node): leaves blue, operations orange")
plt.show()

# %% [markdown]
# ## 4. The same thing in minigrad
#
# `minigrad` is this engine with three changes:
#
# - **An operation is a class**, a subclass of `mg.Function`, with `forward(*arrays)` computing the result and
#   keeping on `self` what the backward pass needs, and `backward(grad)` returning one gradient per input.
#   That is `backward_fn`, with its closure's variables made explicit.
# - **`Function.apply(*tensors)`** runs `forward` on the tensors' arrays and, when an input requires a
#   gradient, records the op: the result's creator is the op (`tensor.creator`) and the op's `inputs` are the
#   parents. Keyword arguments of `apply` become attributes of the op (strides, axes, labels).
# - **`Tensor.backward()`** does what your `backward` does, except that it keeps the gradients of interior
#   nodes in a dictionary and stores only the leaves' in `.grad`, and it frees each op's saved arrays as soon
#   as the op has run, so memory drops during the backward pass.
#
# Here is `mul` as a minigrad `Function`, used on the example:


# %%
class Mul(mg.Function):
    def forward(self, a, b):
        self.a, self.b = a, b  # kept for the backward pass
        return a * b

    def backward(self, grad):
        return grad * self.b, grad * self.a


xt = mg.tensor(0.5, dtype="float64", requires_grad=True)
yt = mg.tensor(-1.5, dtype="float64", requires_grad=True)
at = Mul.apply(xt, yt)
Lt = Mul.apply(F.tanh(at), at + xt)
print("L's creator:", type(Lt.creator).__name__, "| its inputs:", [type(t.creator).__name__ for t in Lt.creator.inputs])
assert isinstance(Lt.creator, Mul) and isinstance(Lt.creator.inputs[1].creator, mg.Function)
Lt.backward()  # walks the graph, then frees it: Lt.creator is None afterwards
print(f"minigrad: dL/dx = {xt.grad.item():.6f}, dL/dy = {yt.grad.item():.6f}")
assert np.isclose(xt.grad.item(), dx) and np.isclose(yt.grad.item(), dy)
assert Lt.creator is None

# %% [markdown]
# **The order minigrad walks.** `Tap` is an identity op that writes its name down when its backward runs.
# `b` is consumed by `d` and by `e`, so it must come after both, although it was made first.

# %%
visited = []


class Tap(mg.Function):
    """Identity in the forward pass; notes its name when the backward pass reaches it."""

    def forward(self, t):
        return t

    def backward(self, grad):
        visited.append(self.name)
        return grad


p = mg.tensor([2.0], requires_grad=True)
tb = Tap.apply(p * 3, name="b")
tc = Tap.apply(p * 5, name="c")
td = Tap.apply(tb * tc, name="d")
te = Tap.apply(td + tb, name="e")  # b is used twice: by d and by e
te.sum().backward()
print("backward visited:", visited)
print("de/dp =", p.grad.item(), "(e = 15 p^2 + 3 p, so 30 p + 3 =", 30 * 2.0 + 3, ")")
assert visited.index("b") > visited.index("d") > visited.index("e")
assert p.grad.item() == 63.0

# %% [markdown]
# **Deep graphs.** Your recursive `visit` calls itself once per level, and Python stops a recursion at
# `sys.getrecursionlimit()` levels. minigrad's topological sort (`topological_order` in `minigrad/tensor.py`)
# keeps an explicit stack of `(node, inputs_done)` pairs instead: a node is pushed with `False`, then again
# with `True` *below* its inputs, so it is appended to the order only after all of them. A chain of ten
# thousand multiplications is then no problem:

# %%
t = mg.tensor([1.0], dtype="float64", requires_grad=True)
h = t
for _ in range(10_000):
    h = h * 1.0001
h.sum().backward()
print(f"d(t * 1.0001^10000)/dt = {t.grad.item():.6f}, exact {1.0001**10_000:.6f}")
print("Python's recursion limit:", sys.getrecursionlimit())
assert 10_000 > sys.getrecursionlimit()
np.testing.assert_allclose(t.grad.item(), 1.0001**10_000, rtol=1e-9)

# %% [markdown]
# ## 5. Gradients add up: `zero_grad`, `retain_graph`, `no_grad`
#
# `backward()` **adds** into a leaf's `.grad`. That is the same rule that gives `x * x` its `2x`, and it lets
# you sum several batches' gradients before one update; the price is clearing them before each new backward
# pass (`optimizer.zero_grad()` in every training loop). A backward pass frees the graph as it goes;
# `retain_graph=True` keeps it for a second pass. Inside `with mg.no_grad():` nothing is recorded at all:
# evaluation runs that way.

# %%
q = mg.tensor([1.0, 2.0], requires_grad=True)
for _ in range(3):
    (q * q).sum().backward()  # d/dq sum(q^2) = 2q = [2, 4], added each time
print("after three backward passes: q.grad =", q.grad.numpy())
np.testing.assert_array_equal(q.grad.numpy(), [6.0, 12.0])
q.zero_grad()
assert q.grad is None

r = mg.tensor([3.0], requires_grad=True)
s = r * r
s.backward(retain_graph=True)
s.backward()
print("two passes through one graph: r.grad =", r.grad.item(), "= 2 * (2 * 3)")
assert r.grad.item() == 12.0

with mg.no_grad():
    z = q * 2
print("inside no_grad: requires_grad =", z.requires_grad, "| creator =", z.creator)
assert not z.requires_grad and z.creator is None

# %% [markdown]
# ## Where this lives in the library
#
# - `minigrad/tensor.py`, in reading order: `Tensor` (`backward`, `creator`, `grad`, `zero_grad`, `detach`),
#   `Function` (`forward`, `backward`, `apply`, `needs_input_grad`, `release`), `topological_order` (the
#   explicit-stack sort), `no_grad`. The checks around the walk (gradient shapes and devices, dtypes) are in
#   `minigrad/guards.py`.
# - `minigrad/functional/basic.py`: `Add`, `Mul`, `Tanh`, `Sum`, ... each a `Function` next to the function you
#   call (`F.add`, `F.mul`, `F.tanh`, `F.sum`).
#
# ## Further exercises
#
# 1. Rewrite your `topological_order` without recursion (an explicit stack, as in minigrad's) and run
#    it on a chain of 10,000 `mul`s.
# 2. Add `exp` and `log` to the tiny engine, each with its `backward_fn`, and extend your copy of the random
#    graphs to use them (compare with `F.exp`, `F.log`).
# 3. Our engine keeps every interior gradient in `node.grad`. Change `backward` to keep them in a dictionary
#    and drop each one once its node has passed it on. How many arrays are alive at most on the chain of
#    exercise 1?

# %%
report_runtime()
