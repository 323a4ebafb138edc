"""Hostile checkpoint files read with bounded memory: every size is checked before anything is decompressed,
so a zip bomb is one line naming what it is, not gigabytes of memory."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from gpudense.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from cli_run import run_cli
from small_models import trained
from zip_bombs import entries_of, npy_header, write_bomb, write_many

BOMB = 64 << 20  # what each bomb's header claims: 64 MiB of zeros, in about 64 KiB of file
PEAK = 8 << 20  # the most memory any refusal below may take


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    model, opt = trained()
    path = tmp_path_factory.mktemp("good") / "good.npz"
    save_checkpoint(path, model, opt, epoch=1, rng=np.random.default_rng(0))
    return path


def _refused(path, match):
    """Load ``path``: a CheckpointError matching ``match``, taking at most PEAK bytes at the peak."""
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=match) as info:
            load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value)
    assert peak < PEAK, f"refusing {path.name} took {peak / 2**20:.0f} MiB"
    return str(info.value)


def test_a_bomb_under_an_unexpected_name_is_refused_before_it_is_decompressed(good, tmp_path):
    path = write_bomb(tmp_path / "junk.npz", entries_of(good), "junk.npy", BOMB)
    assert path.stat().st_size < BOMB // 500
    _refused(path, "unexpected entry 'junk'")


def test_a_bomb_in_place_of_a_parameter_is_refused_by_the_model_in_meta(good, tmp_path):
    path = write_bomb(tmp_path / "param.npz", entries_of(good), "param/0.w.npy", BOMB)
    message = _refused(path, r"its arrays claim \d+ bytes, more than the \d+ a checkpoint of a model of sizes "
                             r"\[4, 6, 3\] and dtype float32 with 3 optimizer slots holds")
    assert str(path) in message


def test_a_bomb_in_an_optimizer_slot_is_refused(good, tmp_path):
    _refused(write_bomb(tmp_path / "slot.npz", entries_of(good), "optim/m/0.w.npy", BOMB), "its arrays claim")


def test_a_bomb_in_meta_is_refused_before_it_is_read(good, tmp_path):
    path = write_bomb(tmp_path / "meta.npz", entries_of(good), "meta.npy", BOMB, descr="<U16384", itemsize=65536)
    _refused(path, r"'meta' declares \d+ bytes; at most 16777216 are read")


def test_a_file_of_many_entries_is_refused_from_its_directory_alone(good, tmp_path):
    _refused(write_many(tmp_path / "many.npz", entries_of(good), 5000), r"holds 5013 entries; at most 4096 are read")


def test_entries_that_share_their_compressed_bytes_are_refused(good, tmp_path):
    """Many directory records naming one stretch of compressed data (the non-recursive zip bomb)."""
    path = tmp_path / "overlap.npz"
    path.write_bytes(good.read_bytes())
    with zipfile.ZipFile(path) as z:
        first, second = z.getinfo("param/0.w.npy"), z.getinfo("param/0.b.npy")
    raw = bytearray(path.read_bytes())
    name = second.filename.encode()
    record = raw.find(b"PK\x01\x02")  # the first central directory record, then each in turn
    while raw[record + 46: record + 46 + len(name)] != name:
        record = raw.find(b"PK\x01\x02", record + 4)
    struct.pack_into("<L", raw, record + 42, first.header_offset)  # its local header offset
    path.write_bytes(bytes(raw))
    _refused(path, "entry param/0.w runs into entry param/0.b|entry param/0.b runs into entry param/0.w")


def test_a_name_used_twice_is_refused(good, tmp_path):
    entries = entries_of(good)
    path = tmp_path / "twice.npz"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        z.writestr("param/0.b.npy", entries["param/0.b.npy"])
    _refused(path, "entry param/0.b appears twice")


def test_deeply_nested_meta_is_one_line(good, tmp_path):
    entries = entries_of(good)
    buf = io.BytesIO()
    np.save(buf, np.array("[" * 100_000 + "]" * 100_000))
    entries["meta.npy"] = buf.getvalue()
    path = tmp_path / "nested.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    _refused(path, "nested too deeply|not a gpudense checkpoint")


def test_without_a_model_in_meta_each_array_still_matches_what_the_zip_declares(good, tmp_path):
    with np.load(good) as z:
        meta = json.loads(str(z["meta"][()]))
    meta.update(model=None, optimizer=None)
    entries = {k: v for k, v in entries_of(good).items() if k.startswith("param/")}
    entries["meta.npy"] = npy_header((), "<U%d" % len(json.dumps(meta))) + json.dumps(meta).encode("utf-32-le")
    path = tmp_path / "noconfig.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    assert sorted(load_checkpoint(path).params) == ["0.b", "0.w", "2.b", "2.w"]


def test_gpudense_train_resume_refuses_a_bomb_on_one_line(good, tmp_path, capsys):
    path = write_bomb(tmp_path / "bomb.npz", entries_of(good), "param/0.w.npy", BOMB)
    status, out, err = run_cli(["train", "--backend", "numpy", "--quiet", "--resume", str(path)], capsys)
    assert status == 1
    assert err.count("\n") == 1 and "its arrays claim" in err and str(path) in err


def test_an_entry_that_decompresses_to_less_than_it_declares_is_truncated(good, tmp_path):
    """The zip and the header agree on 96 bytes of data; the deflated stream holds 48: found while streaming."""
    entries = entries_of(good)
    header = npy_header((4, 6))
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, header + b"\x01" * 48 if name == "param/0.w.npy" else data)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("param/0.w.npy")
    struct.pack_into("<L", raw, info.header_offset + 22, len(header) + 96)  # the local header's size
    record = raw.find(b"PK\x01\x02")
    while raw[record + 46: record + 46 + len(info.filename)] != info.filename.encode():
        record = raw.find(b"PK\x01\x02", record + 4)
    struct.pack_into("<L", raw, record + 24, len(header) + 96)  # the central directory's
    path.write_bytes(bytes(raw))
    message = _refused(path, "truncated or corrupt")
    assert "param/0.w" in message, message
