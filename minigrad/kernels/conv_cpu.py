"""conv2d tuned for the CPU: the same result as the plain `Conv2d` in `minigrad/functional/conv.py`, faster.

Read the plain definition first (im2col, one matrix product per group, + bias; backward: two products,
col2im, a sum). This module does the same products with four changes, each for the CPU's caches and cores:

1. Chunks of images. The batch is unfolded a few images at a time (`ChunkedIm2col`) into ONE reused
   buffer of at most CPU_COLS_BYTES: big enough for GEMMs near the BLAS peak (small per-image ones are
   not), small enough that the columns stay in the cache between im2col and the GEMMs instead of going to
   memory and back. A chunk of m images is one product per group, forward and backward:

       Y_g  = W_g @ cols_g          (O/G, K) @ (K, m*L)
       dW_g^T += cols_g @ dY_g.T    (K, m*L) @ (m*L, O/G)     (chunks in reverse: the last is still unfolded)
       dcols_g = W_g.T @ dY_g       (K, O/G) @ (O/G, m*L)     then col2im

   The columns need not be kept for the backward pass (only the last chunk's are), which unfolds again.
2. The bias rides in the products, as in Caffe: each group's columns get one more row, all ones, and W_g
   one more column, b_g. Y_g then includes the bias, and the last row of dW_g^T is db_g: no separate pass
   over the output for either.
3. Every product is split over the cores on minigrad's own threads, each block on a one-thread BLAS
   (`split_over_cores`; cpu_threads.py says why the BLAS's own threads are never woken): Y_g and dcols_g
   by blocks of their m*L columns, dW_g^T as one partial sum per core over its block of columns, which
   the backward pass adds up.
4. Image by image, for large output planes (CPU_PER_IMAGE_MIN_PIXELS: AlexNet's conv1). One image's
   product is then a large GEMM by itself, and it reads and writes the NCHW arrays in place, without the
   transposes between (m, O, L) and (O, m, L) that the chunk's products need. Each core takes whole
   images instead of a block of columns; a chunk is then a multiple of the core count.
5. dW is accumulated transposed, dW_g^T += cols_g @ dY_g^T: the long m*L axis is the inner one of the
   first operand, the faster layout for OpenBLAS.

Written with `xp` calls, so the tests also run it on the strict CuPy stand-in; the op sends it NumPy arrays.
"""

from __future__ import annotations

from typing import Any

from ..backend import get_array_module
from .cpu_threads import cpu_gemm_threads, split_over_cores
from .im2col import ChunkedIm2col, col2im
from .shapes import output_size

# How many bytes of columns one matrix product may cover (see 1. above); None: the whole batch at once.
# Tests lower it to make small inputs chunk.
CPU_COLS_BYTES: int | None = 16 * 2**20

# A layer whose output planes have at least this many pixels (OH*OW) multiplies image by image (see 4.
# above): AlexNet's conv1 (55x55 = 3,025 pixels) gains, conv2 (27x27) and smaller planes lose.
CPU_PER_IMAGE_MIN_PIXELS = 2048


def _images_per_chunk(x: Any, bytes_per_image: int) -> int:
    n = x.shape[0]
    limit = CPU_COLS_BYTES
    return max(1, n) if limit is None else max(1, min(n, limit // bytes_per_image))  # at least 1: range() steps


class ChunkedConv2d:
    """One conv2d call on the CPU: `forward(x, w, b)`, then `backward(grad, ...)` as often as the graph asks.

    x (N, C, H, W), w (O, C/groups, KH, KW), b (O,) or None -> y (N, O, OH, OW); stride and padding are
    pairs. The object keeps what the backward pass reuses: x, the weights with the bias column, and the
    last chunk's columns.
    """

    def __init__(self, stride: tuple[int, int], padding: tuple[int, int], groups: int) -> None:
        self.stride, self.padding, self.groups = stride, padding, groups

    def _columns(self, unfold: ChunkedIm2col, n0: int, m: int, buffer: Any) -> Any:
        """Columns of images n0 .. n0+m-1 in the front of `buffer`, as (G, K/G [+ 1 row of ones], m, L)."""
        g, kg, rows = self.groups, self.group_rows, self.rows
        cg, (kh, kw), (oh, ow) = unfold.x.shape[1] // g, self.kernel_size, self.output_hw
        cols = buffer[: g * rows * m * oh * ow].reshape(g, rows, m * oh * ow)
        for gi in range(g):
            unfold(n0, m, gi * cg, (gi + 1) * cg, out=cols[gi, :kg].reshape(cg, kh, kw, m, oh, ow))
        if rows > kg:
            cols[:, kg] = 1  # the bias row
        return cols.reshape(g, rows, m, oh * ow)

    def forward(self, x: Any, w: Any, b: Any = None, keep_columns: bool = True) -> Any:
        """y = conv2d(x, w, b). keep_columns: whether a backward pass will want dW (and so the columns)."""
        xp = get_array_module(x, w)
        n = x.shape[0]
        o, cg, kh, kw = w.shape
        g = self.groups
        og, kg = o // g, cg * kh * kw
        rows = kg + (b is not None)
        oh, ow = (output_size(*args) for args in zip(x.shape[2:], (kh, kw), self.stride, self.padding))
        length = oh * ow
        self.kernel_size, self.output_hw, self.group_rows, self.rows = (kh, kw), (oh, ow), kg, rows
        step = _images_per_chunk(x, g * rows * length * x.dtype.itemsize)
        self.per_image = length >= CPU_PER_IMAGE_MIN_PIXELS
        self.cores = cpu_gemm_threads()
        if self.per_image and n:  # whole images per core (split_over_cores): chunks of a multiple of the cores
            step = min(n, -(-step // self.cores) * self.cores)  # rounded up: fewer sections
        self.wmat = w.reshape(g, og, kg)
        if b is not None:  # the bias is the last column of each group's weight matrix
            self.wmat = xp.concatenate([self.wmat, b.reshape(g, og, 1)], axis=2)
        unfold = ChunkedIm2col(x, kh, kw, self.stride, self.padding)
        out = xp.empty((n, o, length), dtype=x.dtype)
        cols_buffer = xp.empty(g * rows * step * length, dtype=x.dtype)
        y_buffer = None if self.per_image else xp.empty(o * step * length, dtype=x.dtype)
        cols = None  # stays None for an empty batch
        for n0 in range(0, n, step):
            m = min(step, n - n0)
            cols = self._columns(unfold, n0, m, cols_buffer)
            self._output(cols, m, out[n0 : n0 + m], y_buffer)
        # dW needs the columns again. Keep the last chunk's (all of them when the batch is one chunk): the
        # backward pass goes through the chunks in reverse and starts with it; the others it unfolds again.
        self.cols, self.cols_buffer = (cols, cols_buffer) if keep_columns else (None, None)
        self.unfold = unfold if keep_columns and step < n else None
        self.x, self.w, self.step = x, w, step
        return out.reshape(n, o, oh, ow)

    def _output(self, cols: Any, m: int, out: Any, y_buffer: Any) -> None:
        """out (m, O, L) = the chunk's Y_g = W_g @ cols_g, columns or images split over the cores."""
        xp = get_array_module(cols)
        g, (_, og, rows), length = self.groups, self.wmat.shape, cols.shape[-1]
        if self.per_image:  # image i: (O/G, K) @ (K, L) per group, straight into its (O, L) output

            def images(lo: int, hi: int) -> None:
                for i in range(lo, hi):
                    y = out[i].reshape(g, og, length)
                    for gi in range(g):
                        xp.matmul(self.wmat[gi], cols[gi, :, i], out=y[gi])

            split_over_cores(m, images, self.cores)
            return
        flat = cols.reshape(g, rows, m * length)
        y = y_buffer[: g * og * m * length].reshape(g, og, m * length)

        def columns(lo: int, hi: int) -> None:  # each core: its block of the m*L columns, every group
            for gi in range(g):
                xp.matmul(self.wmat[gi], flat[gi, :, lo:hi], out=y[gi, :, lo:hi])

        split_over_cores(m * length, columns, self.cores)
        out[...] = y.reshape(g * og, m, length).transpose(1, 0, 2)  # (O, m, L) -> (m, O, L)

    def backward(self, grad: Any, need_x: bool, need_w: bool, need_b: bool) -> tuple[Any, Any, Any]:
        """(dx, dw, db) from grad = dL/dy (N, O, OH, OW); None for each one not asked for."""
        xp = get_array_module(grad)
        n, c = self.x.shape[:2]
        o, _, kh, kw = self.w.shape
        g, kg, rows, step = self.groups, self.group_rows, self.rows, self.step
        length = self.output_hw[0] * self.output_hw[1]
        grad = xp.ascontiguousarray(grad).reshape(n, o, length)
        self.backward_cores = min(self.cores, cpu_gemm_threads())  # fewer if the BLAS threads were lowered since
        dw_t = xp.zeros((g, rows, o // g), dtype=grad.dtype) if need_w else None  # its last row is db
        dx = xp.empty(self.x.shape, dtype=grad.dtype) if need_x else None
        dcols_buffer = xp.empty(c * kh * kw * step * length, dtype=grad.dtype) if need_x else None
        gm_buffer = None if self.per_image else xp.empty(o * step * length, dtype=grad.dtype)
        cols_buffer = self.cols_buffer
        if need_w and cols_buffer is None:  # w did not need a gradient when the forward pass ran
            cols_buffer = xp.empty(g * rows * step * length, dtype=grad.dtype)
        last = (n - 1) // step * step  # the chunk whose columns the forward pass left in cols_buffer
        for n0 in range(last, -1, -step):
            m = min(step, n - n0)
            if self.per_image:  # each image's gradient (O, L) read in place: (G, O/G, L) per image
                dy = [grad[n0 + i].reshape(g, o // g, length) for i in range(m)]
            else:  # (m, O, L) -> (O, m, L) = (G, O/G, m*L), matching the columns' layout
                gm = gm_buffer[: o * m * length].reshape(o, m, length)
                gm[...] = grad[n0 : n0 + m].transpose(1, 0, 2)
                dy = gm.reshape(g, o // g, m * length)
            if need_w:
                reuse = n0 == last and self.cols is not None
                cols = self.cols if reuse else self._columns(self._unfolder(), n0, m, cols_buffer)
                for part in self._weight_gradient(cols, dy, m):
                    dw_t += part
            if need_x:  # the first layer needs no input gradient: skip the biggest GEMM and col2im
                dcols = self._column_gradient(dcols_buffer, dy, m)
                col2im(dcols, (m, *self.x.shape[1:]), kh, kw, self.stride, self.padding, out=dx[n0 : n0 + m])
        dw = db = None
        if need_w:
            dw = xp.ascontiguousarray(dw_t[:, :kg].transpose(0, 2, 1)).reshape(self.w.shape)
        if need_b:  # from the row of ones when dW was computed, else summed directly
            db = xp.ascontiguousarray(dw_t[:, kg]).reshape(o) if need_w else grad.sum(axis=(0, 2))
        if last > 0:  # cols_buffer now holds another chunk: a second backward (retain_graph) unfolds again
            self.cols = None
        return dx, dw, db

    def _unfolder(self) -> ChunkedIm2col:
        if self.unfold is None:  # w did not need a gradient in the forward pass, which kept nothing
            kh, kw = self.kernel_size
            self.unfold = ChunkedIm2col(self.x, kh, kw, self.stride, self.padding)
        return self.unfold

    def _weight_gradient(self, cols: Any, dy: Any, m: int) -> list[Any]:
        """The chunk's cols_g @ dY_g^T for each group, (G, K/G [+ 1], O/G), as one partial sum per core."""
        xp = get_array_module(cols)
        g, rows, og = self.groups, self.rows, self.wmat.shape[1]
        if self.per_image:  # dy: one (G, O/G, L) gradient per image

            def images(lo: int, hi: int) -> Any:
                part = xp.zeros((g, rows, og), dtype=cols.dtype)
                product = xp.empty((rows, og), dtype=cols.dtype)
                for i in range(lo, hi):
                    for gi in range(g):
                        xp.matmul(cols[gi, :, i], dy[i][gi].T, out=product)
                        part[gi] += product
                return part

            return split_over_cores(m, images, self.backward_cores)
        flat = cols.reshape(g, rows, -1)  # dy: (G, O/G, m*L), like the columns

        def columns(lo: int, hi: int) -> Any:  # each core: the products over its block of the m*L columns
            part = xp.empty((g, rows, og), dtype=cols.dtype)
            for gi in range(g):
                xp.matmul(flat[gi, :, lo:hi], dy[gi, :, lo:hi].T, out=part[gi])
            return part

        return split_over_cores(flat.shape[-1], columns, self.backward_cores)

    def _column_gradient(self, dcols_buffer: Any, dy: Any, m: int) -> Any:
        """dcols_g = W_g^T @ dY_g for the chunk's m images, as (C, KH, KW, m, OH, OW) for col2im."""
        xp = get_array_module(dcols_buffer)
        g, kg = self.groups, self.group_rows
        (kh, kw), (oh, ow) = self.kernel_size, self.output_hw
        length = oh * ow
        w_t = self.wmat[:, :, :kg].transpose(0, 2, 1)  # (G, K/G, O/G), without the bias column
        dcols = dcols_buffer[: g * kg * m * length].reshape(g, kg, m, length)
        if self.per_image:

            def images(lo: int, hi: int) -> None:
                for i in range(lo, hi):
                    for gi in range(g):
                        xp.matmul(w_t[gi], dy[i][gi], out=dcols[gi, :, i])

            split_over_cores(m, images, self.backward_cores)
        else:
            flat = dcols.reshape(g, kg, m * length)

            def columns(lo: int, hi: int) -> None:  # each core: its block of the m*L columns, every group
                for gi in range(g):
                    xp.matmul(w_t[gi], dy[gi, :, lo:hi], out=flat[gi, :, lo:hi])

            split_over_cores(m * length, columns, self.backward_cores)
        return dcols.reshape(self.x.shape[1], kh, kw, m, oh, ow)
