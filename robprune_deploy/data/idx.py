"""The IDX file format of MNIST and Fashion-MNIST (LeCun et al.), plain or gzip-compressed.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
``int32`` dimension sizes, then the values in row-major order, big-endian. MNIST-style label files
have magic 2049 (``uint8``, one dimension), image files 2051 (``uint8``, three dimensions).

Every defect (missing file, wrong magic number, truncated or over-long data, corrupt gzip stream)
is a :class:`DatasetError` that names the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from robprune_deploy.data.paths import not_a_file
from robprune_deploy.errors import DatasetError

LABELS_MAGIC = 2049
"""``uint8`` values, one dimension (MNIST/Fashion-MNIST label files)."""
IMAGES_MAGIC = 2051
"""``uint8`` values, three dimensions: count, rows, columns (MNIST/Fashion-MNIST image files)."""

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    reason = not_a_file(path)
    if reason == "does not exist":
        raise DatasetError(f"{path}: no such file")
    if reason is not None:
        raise DatasetError(f"{path} {reason}")
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut stream is EOFError
        raise DatasetError(f"{path}: not a readable IDX file ({exc.__class__.__name__}: {exc})") from None


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` or uncompressed, told apart by content).

    :param magic: the magic number the file must have (:data:`LABELS_MAGIC`, :data:`IMAGES_MAGIC`);
        ``None`` accepts any valid IDX header.
    :raises DatasetError: naming ``path`` when the file is missing, its magic number is not
        ``magic`` or not an IDX one, or its data is shorter or longer than its header declares.
    """
    file = Path(path)
    data = _read_bytes(file)
    if len(data) < 4:
        raise DatasetError(f"{file}: truncated: {len(data)} bytes, shorter than an IDX header")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise DatasetError(f"{file}: magic number {found}, expected {magic}")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _TYPES or ndim == 0:
        raise DatasetError(f"{file}: magic number {found} is not an IDX header")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{file}: truncated: the header declares {ndim} dimensions, the file ends first")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise DatasetError(f"{file}: truncated: shape {shape} needs {expected} bytes of data, the file has {actual}")
    if actual > expected:
        raise DatasetError(f"{file}: {actual - expected} bytes beyond the data its header declares (shape {shape})")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when ``compress``, default: name ends in ``.gz``).

    The inverse of :func:`read_idx`; used to build small datasets in the real format.
    """
    file = Path(path)
    codes = {dtype.newbyteorder("="): code for code, dtype in _TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    big = _TYPES[codes[native]]
    header = bytes([0, 0, codes[native], array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=big).tobytes()
    if compress if compress is not None else file.suffix == ".gz":
        payload = gzip.compress(payload)
    file.write_bytes(payload)
    return file
