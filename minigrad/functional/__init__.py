"""All differentiable ops, as lowercase functions on Tensors (`import minigrad.functional as F`).

Each op is a `Function` subclass in one of the modules below (forward and backward
on raw arrays) plus the function users call.
"""

from minigrad.functional.basic import (
    add,
    cast,
    concatenate,
    div,
    exp,
    flatten,
    getitem,
    log,
    matmul,
    max,
    maximum,
    mean,
    mul,
    neg,
    pad,
    permute,
    pow,
    relu,
    reshape,
    sigmoid,
    sqrt,
    stack,
    sub,
    sum,
    sum_to,
    tanh,
    transpose,
    where,
)
from minigrad.functional.conv import conv2d
from minigrad.functional.loss import cross_entropy, linear, log_softmax, softmax
from minigrad.functional.methods import install_tensor_methods
from minigrad.functional.norm import dropout, local_response_norm
from minigrad.functional.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "adaptive_avg_pool2d",
    "add",
    "avg_pool2d",
    "cast",
    "concatenate",
    "conv2d",
    "cross_entropy",
    "div",
    "dropout",
    "exp",
    "flatten",
    "getitem",
    "linear",
    "local_response_norm",
    "log",
    "log_softmax",
    "matmul",
    "max",
    "max_pool2d",
    "maximum",
    "mean",
    "mul",
    "neg",
    "pad",
    "permute",
    "pow",
    "relu",
    "reshape",
    "sigmoid",
    "softmax",
    "sqrt",
    "stack",
    "sub",
    "sum",
    "sum_to",
    "tanh",
    "transpose",
    "where",
]

install_tensor_methods()  # Tensor's operators and methods are these ops (see methods.py)
