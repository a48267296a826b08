"""IDX files, the format of MNIST and Fashion-MNIST: `read_idx`, `write_idx`.

May import: NumPy, the standard library.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

# The IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
# 0x00 0x00 <dtype code> <number of dimensions>, then one big-endian uint32 per
# dimension, then the values in C order, big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _idx_code(dtype: np.dtype) -> int:
    for code, idx_dtype in IDX_DTYPES.items():
        if idx_dtype.newbyteorder("=") == dtype.newbyteorder("="):
            return code
    raise ValueError(f"IDX cannot store dtype {dtype}; supported: uint8, int8, int16, int32, float32, float64")


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (raw, or gzip-compressed) into a native-endian NumPy array.

    Gzip is recognised by its magic bytes, so `train-images-idx3-ubyte` and
    `train-images-idx3-ubyte.gz` both work. The header is checked against the
    payload, and every problem raises a `ValueError` that names the file:
    bad magic number, unsupported dtype code, wrong number of dimensions,
    truncated or over-long data, a `.gz` file that is not gzip, corrupt gzip.

    Args:
        path: the file.
        expected_ndim: if given, the number of dimensions the header must declare
            (1 for label files, 3 for image files).

    Returns:
        the array, shape as in the header (e.g. `(60000, 28, 28)` uint8 images,
        `(60000,)` uint8 labels), writable and in native byte order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a well-formed IDX file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    data = path.read_bytes()

    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    elif path.suffix == ".gz":
        raise ValueError(f"{path}: the name ends in .gz but the file is not gzip-compressed (no gzip magic bytes)")

    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes, need at least 4)")
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08X}; an IDX file starts with two zero bytes "
            "(e.g. 0x00000801 for uint8 labels, 0x00000803 for uint8 images)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in IDX_DTYPES.items())
        raise ValueError(f"{path}: unsupported IDX dtype code 0x{code:02X} (magic 0x{magic:08X}); known: {known}")
    if ndim == 0:
        raise ValueError(f"{path}: the header declares 0 dimensions (magic 0x{magic:08X})")
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{path}: expected {expected_ndim} dimension(s), the header declares {ndim}")

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, file has {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))

    dtype = IDX_DTYPES[code]
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(data) - header_size
    if actual < expected:
        raise ValueError(
            f"{path}: truncated data: the header promises shape {shape} of {dtype.name} = {expected} bytes, "
            f"but only {actual} bytes follow the header"
        )
    if actual > expected:
        raise ValueError(
            f"{path}: {actual - expected} unexpected trailing bytes after the {expected} bytes of data "
            f"that the header (shape {shape}, {dtype.name}) describes"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_size).reshape(shape)
    # astype copies: the result is writable and in the machine's byte order.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as an IDX file; gzip-compressed if `path` ends in `.gz`.

    The inverse of `read_idx`, for test fixtures and for exporting data.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _idx_code(array.dtype)
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)  # mtime=0: the same array gives the same bytes
    path.write_bytes(payload)
    return path
