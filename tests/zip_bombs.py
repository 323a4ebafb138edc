"""Hostile checkpoint files for the tests: a real checkpoint's entries with one entry added or replaced by a
zip bomb (an ``.npy`` header honestly claiming ``n_bytes`` of zeros, deflated about 1000 to 1), and
archives of many entries."""

from __future__ import annotations

import struct
import zipfile

_CHUNK = b"\x00" * (1 << 20)


def npy_header(shape, descr="<f4"):
    """A version 1.0 ``.npy`` header for ``shape`` and ``descr``."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    header += b" " * (64 - (10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def entries_of(path):
    """``{name: bytes}`` of every entry of the zip at ``path``."""
    with zipfile.ZipFile(path) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def write_bomb(path, entries, bomb_name, n_bytes, descr="<f4", itemsize=4):
    """Write ``entries`` (stored) and ``bomb_name``: a header claiming ``n_bytes`` of zeros, and those zeros, deflated."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            if name != bomb_name:
                z.writestr(name, data)
        info = zipfile.ZipInfo(bomb_name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=n_bytes > 2**31) as f:
            f.write(npy_header((n_bytes // itemsize,), descr))
            left = n_bytes
            while left:
                f.write(_CHUNK[: min(left, len(_CHUNK))])
                left -= min(left, len(_CHUNK))
    return path


def write_many(path, entries, count):
    """Write ``entries`` and ``count`` more, each a one-float ``param/<i>.npy`` entry."""
    one = npy_header((1,)) + b"\x00" * 4
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for i in range(count):
            z.writestr(f"param/x{i}.npy", one)
    return path
