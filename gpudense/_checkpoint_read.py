"""Reading a checkpoint file: its ``meta`` first, then its arrays, each bounded before it is decompressed.

:func:`gpudense.checkpoint.load_checkpoint` calls :func:`read_checkpoint`.
Whatever the file holds, reading takes about the memory of the arrays its
``meta`` says a checkpoint of that model holds:

1. the zip directory is checked before anything is decompressed
   (:class:`~gpudense._npz.NpzReader`: entry names, count, sizes each
   entry's compressed bytes can expand to, no overlaps);
2. ``meta`` (at most :data:`MAX_META` bytes) is read and checked;
3. every other entry must be ``param/<name>`` or ``optim/<slot>/<name>`` of a
   slot ``meta`` declares, and only its ``.npy`` header is decompressed: it
   must claim the bytes the zip declares, a floating dtype, and all arrays
   together at most what the model in ``meta`` holds, its parameters and
   two parameter-sized arrays per optimizer slot (without a model in
   ``meta``: what the ``param/`` entries claim);
4. only then are the arrays streamed in, one at a time.

Every refusal is a :class:`~gpudense._files.FileRefused` of one line naming
the file; the checkpoint module turns it into a ``CheckpointError``.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

import numpy as np

from gpudense._checks import bfloat16_dtype, check_finite
from gpudense._files import FileRefused
from gpudense._npz import NpzReader

FORMAT = "gpudense-checkpoint"
VERSION = 2  # per-parameter step counts, float32 master copies of float16 parameters
BF16 = "bfloat16"
MAX_META = 16 << 20  # bytes of 'meta' (4-byte characters): about 4 million characters of JSON
MAX_SLOTS = 8  # an optimizer's slots (SGD: momentum, master; Adam: m, v, master)
MAX_ENTRIES = 4096
_SLACK = 64 << 10  # bytes allowed above the model's arrays, so that a tiny model's file is never refused


def read_checkpoint(f: BinaryIO, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray],
                                                      dict[str, dict[str, np.ndarray]]]:
    """``(meta, params, slots)`` of the checkpoint open as ``f``: ``meta`` checked, arrays finite.

    Args:
        f: The file, opened for binary reading at its start.
        where: How messages name it, e.g. ``"checkpoint run.npz"``.

    Raises:
        FileRefused: what the file holds is not a gpudense checkpoint, or
            more than one could hold; one line naming the file.
        zipfile.BadZipFile, zlib.error, EOFError, ValueError: as the zip and
            npy readers find a truncated or corrupt archive.

    Example:
        >>> import os, tempfile
        >>> from gpudense.checkpoint import save_checkpoint
        >>> from gpudense.nn import MLP
        >>> path = save_checkpoint(os.path.join(tempfile.mkdtemp(), "c.npz"), MLP([3, 2], backend="numpy"), epoch=4)
        >>> with open(path, "rb") as f:
        ...     meta, params, slots = read_checkpoint(f, "checkpoint c.npz")
        >>> meta["epoch"], sorted(params), slots
        (4, ['0.b', '0.w'], {})
    """
    with NpzReader(f, where, max_entries=MAX_ENTRIES) as z:
        meta = _parse_meta(where, _meta_json(z, where))
        raw_dtypes = meta.get("raw_dtypes", {})
        slot_names = set(meta["optimizer"]["slots"]) if meta["optimizer"] is not None else set()
        kinds: dict[str, tuple[str, str]] = {}
        for key in z.keys:
            if key == "meta":
                continue
            kind, _, rest = key.partition("/")
            slot, _, name = rest.partition("/")
            if kind == "param" and rest:
                kinds[key] = ("param", rest)
            elif kind == "optim" and name:
                kinds[key] = (slot, name)
            else:
                raise FileRefused(f"{where}: unexpected entry {key!r}")
        slots_found = {slot for slot, _ in kinds.values() if slot != "param"}
        if slots_found and meta["optimizer"] is None:
            raise FileRefused(f"{where} has optimizer arrays but no optimizer entry")
        unknown = sorted(slots_found - slot_names)
        if unknown:
            raise FileRefused(f"{where}: optimizer arrays for undeclared slots {unknown}")
        for key in raw_dtypes:
            if raw_dtypes[key] != BF16 or key not in kinds or z.header(key)[1] != np.uint16:
                raise FileRefused(f"{where}: raw_dtypes entry {key!r}: {raw_dtypes[key]!r} must name a uint16 "
                                  "entry stored as bfloat16 bits")
        sizes: dict[str, int] = {}
        for key in kinds:
            _, dtype, sizes[key] = z.header(key)
            if dtype.kind != "f" and not (key in raw_dtypes and dtype == np.uint16):
                raise FileRefused(f"{where}: entry {key} has dtype {dtype}; expected a floating array")
        _check_total(where, meta, sizes, kinds)
        params: dict[str, np.ndarray] = {}
        slots: dict[str, dict[str, np.ndarray]] = {}
        for key, (slot, name) in kinds.items():
            a = z.read(key)
            if key in raw_dtypes:
                a = a.view(bfloat16_dtype())
            try:
                check_finite(key, a)
            except ValueError as exc:
                raise FileRefused(f"{where}: {exc}; a checkpoint of a diverged or damaged run cannot be "
                                  "resumed") from None
            if slot == "param":
                params[name] = a
            else:
                slots.setdefault(slot, {})[name] = a
    if not params:
        raise FileRefused(f"{where} holds no parameters")
    return meta, params, slots


def read_meta(f: BinaryIO, where: str) -> dict[str, Any]:
    """The ``meta`` of the ``.npz`` open as ``f``, as JSON gives it (only ``meta`` is decompressed).

    Its fields are not checked beyond a string ``format``: what a gpudense
    checkpoint's meta holds is checked by :func:`read_checkpoint`.

    Raises:
        FileRefused, zipfile.BadZipFile, zlib.error, EOFError, ValueError: the
            file is no ``.npz``, has no readable ``meta``, or its ``meta`` is
            no JSON object naming a format.

    Example:
        >>> import io, json, numpy as np
        >>> buf = io.BytesIO(); np.savez(buf, meta=np.array(json.dumps({"format": "x", "epoch": 1}))); _ = buf.seek(0)
        >>> read_meta(buf, "example")
        {'format': 'x', 'epoch': 1}
    """
    with NpzReader(f, where, max_entries=MAX_ENTRIES) as z:
        meta = _json(where, _meta_json(z, where))
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), str):
        raise FileRefused(f"{where}: 'meta' names no format")
    return meta


def _meta_json(z: NpzReader, where: str) -> str:
    """The text of the ``meta`` entry, its size checked before it is decompressed."""
    if "meta" not in z.keys:
        raise FileRefused(f"{where} has no 'meta' entry: not a gpudense checkpoint")
    if z.declared_size("meta") > MAX_META + 1024:
        raise FileRefused(f"{where}: 'meta' declares {z.declared_size('meta')} bytes; at most "
                          f"{MAX_META} are read")
    shape, dtype, _ = z.header("meta")
    if dtype.kind != "U" or shape != ():
        raise FileRefused(f"{where}: 'meta' is not a JSON string")
    return str(z.read("meta")[()])


def _json(where: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileRefused(f"{where}: 'meta' is not valid JSON: {exc}") from None
    except RecursionError:
        raise FileRefused(f"{where}: 'meta' is nested too deeply to be a gpudense checkpoint's") from None


def _check_total(where: str, meta: dict[str, Any], sizes: dict[str, int], kinds: dict[str, tuple[str, str]]) -> None:
    """Refuse arrays that together claim more than a checkpoint of the model in ``meta`` holds."""
    model = meta["model"]
    if model is not None:
        itemsize = 2 if model["dtype"] == BF16 else _float_itemsize(where, model["dtype"])
        n = model["sizes"]
        legit = itemsize * sum(a * b + (b if model["bias"] else 0) for a, b in zip(n, n[1:]))
        what = f"a model of sizes {n} and dtype {model['dtype']}"
    else:
        legit = sum(size for key, size in sizes.items() if kinds[key][0] == "param")
        what = "its parameters"
    n_slots = len(meta["optimizer"]["slots"]) if meta["optimizer"] is not None else 0
    most = legit * (1 + 2 * n_slots) + _SLACK
    total = sum(sizes.values())
    if total > most:
        raise FileRefused(f"{where}: its arrays claim {total} bytes, more than the {most} a checkpoint of "
                          f"{what} with {n_slots} optimizer slots holds")


def _float_itemsize(where: str, name: str) -> int:
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind != "f":
        raise FileRefused(f"{where}: meta model dtype must name a floating dtype; got {name!r}")
    return dtype.itemsize


def _parse_meta(where: str, text: str) -> dict[str, Any]:
    """``meta`` as a dict, every field of the type it must have."""
    meta = _json(where, text)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FileRefused(f"{where} is not a gpudense checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise FileRefused(f"{where} has format version {meta.get('version')!r}; this gpudense reads {VERSION}")
    for key in ("epoch", "model", "optimizer", "rng", "extra"):
        if key not in meta:
            raise FileRefused(f"{where}: 'meta' lacks {key!r}")
    epoch = meta["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise FileRefused(f"{where}: epoch must be a non-negative int; got {epoch!r}")
    _check_type(where, "raw_dtypes", meta.get("raw_dtypes", {}), dict)
    opt = meta["optimizer"]
    if opt is not None:
        if not isinstance(opt, dict) or not {"type", "hyperparams", "step", "param_steps", "slots"} <= set(opt):
            raise FileRefused(f"{where}: optimizer entry lacks type/hyperparams/step/param_steps/slots")
        _check_type(where, "optimizer type", opt["type"], str)
        _check_type(where, "optimizer hyperparams", opt["hyperparams"], dict)
        for name, value in opt["hyperparams"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise FileRefused(f"{where}: optimizer hyper-parameter {name} must be a number; got {value!r}")
        _check_type(where, "optimizer step", opt["step"], int)
        _check_type(where, "optimizer param_steps", opt["param_steps"], dict)
        for name, value in opt["param_steps"].items():
            _check_type(where, f"optimizer param_steps[{name!r}]", value, int)
        _check_type(where, "optimizer slots", opt["slots"], list)
        for slot in opt["slots"]:
            _check_type(where, "optimizer slot name", slot, str)
        if len(set(opt["slots"])) > MAX_SLOTS:
            raise FileRefused(f"{where}: meta optimizer slots lists {len(set(opt['slots']))} slots; an "
                              f"optimizer has at most {MAX_SLOTS}")
    model = meta["model"]
    if model is not None:
        _check_type(where, "model", model, dict)
        for key in ("sizes", "activation", "bias", "dtype"):
            if key not in model:
                raise FileRefused(f"{where}: model entry lacks {key!r}")
        _check_type(where, "model sizes", model["sizes"], list)
        for size in model["sizes"]:
            _check_type(where, "model size", size, int)
            if size < 1:
                raise FileRefused(f"{where}: meta model sizes must be integers >= 1; got {model['sizes']!r}")
        _check_type(where, "model activation", model["activation"], str)
        _check_type(where, "model bias", model["bias"], bool)
        _check_type(where, "model dtype", model["dtype"], str)
    if meta["rng"] is not None:
        _check_type(where, "rng", meta["rng"], dict)
    _check_type(where, "extra", meta["extra"], dict)
    return meta


_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "true or false"}


def _check_type(where: str, what: str, value: Any, kind: type) -> None:
    """FileRefused unless the JSON value ``value`` is of ``kind`` (bools are not ints)."""
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise FileRefused(f"{where}: meta {what} must be {_JSON_NAMES[kind]}; got {value!r}")
