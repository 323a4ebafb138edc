"""Checkpoints whose contents cannot be trusted: non-finite values, negative second moments, sizes the
file cannot hold, bytes that are no .npz; each is one line naming what came, and nothing changes."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from gpudense.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpudense.nn import MLP
from gpudense.optim import Adam

from small_models import rewrite, trained


@pytest.fixture
def saved(tmp_path):
    model, opt = trained(steps=2)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt, epoch=2, rng=np.random.default_rng(1))
    return path


def poison(key, value, index=0):
    def change(arrays):
        a = arrays[key].copy()
        a.flat[index] = value
        arrays[key] = a
    return change


def assert_nothing_changed(path):
    target = MLP([4, 6, 3], backend="numpy", rng=7)
    opt = Adam(target)
    gen = np.random.default_rng(3)
    state = gen.bit_generator.state
    before = target.state_dict()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path).restore(target, opt, gen)
    for name, a in target.state_dict().items():
        np.testing.assert_array_equal(a, before[name])
    assert opt.step_count == 0 and not any(opt.state.values()) and gen.bit_generator.state == state
    return str(info.value)


@pytest.mark.parametrize("key", ["param/0.w", "param/2.b", "optim/m/0.b", "optim/v/2.w"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_array_is_refused_at_load_naming_it(saved, tmp_path, key, value):
    bad = rewrite(saved, tmp_path / "bad.npz", poison(key, value))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    message = str(info.value)
    assert "\n" not in message and f"checkpoint {bad}: {key} holds 1 of" in message
    assert "not finite (NaN or inf)" in message and "diverged" in message
    assert "lower --lr" not in message


def test_a_negative_second_moment_is_refused_and_nothing_changes(saved, tmp_path):
    bad = rewrite(saved, tmp_path / "bad.npz", poison("optim/v/0.w", -0.5))
    message = assert_nothing_changed(bad)
    assert f"checkpoint {bad}: optimizer state v/0.w holds a negative value (-0.5)" in message


def test_restore_refuses_non_finite_parameters_of_a_hand_made_checkpoint(saved):
    ckpt = load_checkpoint(saved)
    ckpt.params["2.w"] = ckpt.params["2.w"].copy()
    ckpt.params["2.w"][0, 0] = np.nan
    target = MLP([4, 6, 3], backend="numpy", rng=7)
    before = target.state_dict()
    with pytest.raises(CheckpointError, match=r"param/2\.w holds 1 of 18 values that are not finite"):
        ckpt.restore(target)
    for name, a in target.state_dict().items():
        np.testing.assert_array_equal(a, before[name])


def test_a_resumed_run_from_a_nan_checkpoint_stops_before_the_data(saved, tmp_path, capsys, monkeypatch):
    from gpudense import cli
    from gpudense.cli import train as train_command

    bad = rewrite(saved, tmp_path / "bad.npz", poison("param/0.w", np.nan))
    monkeypatch.setattr(train_command, "_load_data", lambda args: pytest.fail("data loaded"))
    status = cli.main(["train", "--backend", "numpy", "--quiet", "--resume", str(bad)])
    out, err = capsys.readouterr()
    assert status == 1 and out == "" and err.count("\n") == 1
    assert f"checkpoint {bad}: param/0.w holds" in err and "diverged" not in err.split(";")[0]


# -- bytes that are no checkpoint -------------------------------------------------------------


def test_random_bytes_say_what_came_and_give_no_pickle_advice(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "pickle" not in message.lower()
    assert f"checkpoint {path} is truncated or corrupt" in message
    assert "not a .npz file (a zip archive)" in message


def test_a_text_file_says_what_came(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello, this is text\n")
    with pytest.raises(CheckpointError, match=r"starts with b'hello, t'"):
        load_checkpoint(path)


def test_a_pickled_entry_is_named_without_pickle_advice(tmp_path):
    path = tmp_path / "pickled.npz"
    with open(path, "wb") as f:
        np.savez(f, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "truncated or corrupt" in message and "entry meta holds Python objects" in message
    assert "allow_pickle" not in message


def _npy_header(shape, descr="<f4"):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize("stored", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_header_claiming_2_to_the_40_elements_is_corrupt_not_out_of_memory(saved, tmp_path, stored):
    with zipfile.ZipFile(saved) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    entries["param/0.w.npy"] = _npy_header((2**40,)) + b"\x00" * 96
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w", compression=stored) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "memory" not in message
    assert f"checkpoint {path} is truncated or corrupt: entry param/0.w claims shape (1099511627776,)" in message
    assert "4 TiB" in message and "holds 96 bytes" in message


def test_a_header_claiming_fewer_bytes_than_stored_is_corrupt(saved, tmp_path):
    with zipfile.ZipFile(saved) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.float32))
    entries["param/0.b.npy"] = buf.getvalue() + b"\x00" * 8  # 8 stray bytes after the data
    path = tmp_path / "long.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"entry param/0\.b claims shape \(3,\) .* holds 20 bytes"):
        load_checkpoint(path)


def test_a_header_and_a_zip_size_that_agree_on_a_forged_size_are_corrupt(saved, tmp_path):
    """The .npy header claims 2^28 floats (1 GiB) and so does the zip's uncompressed size; 1000 bytes are stored."""
    with zipfile.ZipFile(saved) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    header = _npy_header((2**28,))
    entries["param/0.w.npy"] = header + b"\x00" * 1000
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    stored = (len(header) + 1000).to_bytes(4, "little")
    forged = (len(header) + 4 * 2**28).to_bytes(4, "little")
    raw = path.read_bytes()
    # compressed size, then uncompressed size: in the local header and in the central directory
    assert raw.count(stored + stored) == 2
    path.write_bytes(raw.replace(stored + stored, stored + forged))
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("param/0.w.npy").file_size == len(header) + 4 * 2**28  # the forgery took
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "truncated or corrupt: entry param/0.w declares 1 GiB, more than its 1128 stored bytes can hold" in message
