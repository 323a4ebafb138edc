"""Where a checkpoint may be written: a regular file or a new path; a symlink is followed; anything else is refused."""

from __future__ import annotations

import os
import re
import socket
import stat

import numpy as np
import pytest

from gpudense.checkpoint import CheckpointError, check_target, load_checkpoint, save_checkpoint
from gpudense.nn import MLP
from gpudense.optim import Adam


def small():
    model = MLP([3, 4, 2], backend="numpy", rng=0)
    return model, Adam(model)


def _fifo(path):
    os.mkfifo(path)
    return "a FIFO (named pipe)"


def _socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the socket file stays
    return "a socket"


def _directory(path):
    path.mkdir()
    return "a directory"


def _char_device(path):
    if os.geteuid() != 0:
        pytest.skip("making a character device needs root (os.mknod)")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is, in tmp_path
    return "a character device"


KINDS = {"fifo": _fifo, "socket": _socket, "directory": _directory, "char device": _char_device}


def _kind_of(path):
    return stat.S_IFMT(os.lstat(path).st_mode)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_path_that_is_not_a_regular_file_is_refused_and_left_alone(kind, tmp_path):
    target = tmp_path / "ck.npz"
    what = KINDS[kind](target)
    before = _kind_of(target)
    model, opt = small()
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(target, model, opt, epoch=1)
    message = str(info.value)
    assert "\n" not in message and str(target) in message and what in message
    assert _kind_of(target) == before  # not replaced by a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]  # no temporary left
    with pytest.raises(CheckpointError, match=re.escape(what)):
        check_target(target)


def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = real_dir / "ck.npz"
    model, opt = small()
    save_checkpoint(real, model, opt, epoch=1)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    save_checkpoint(link, model, opt, epoch=2)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load_checkpoint(real).epoch == 2  # the file it names was replaced
    assert sorted(p.name for p in real_dir.iterdir()) == ["ck.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real"]


def test_a_relative_chain_of_symlinks_is_followed(tmp_path):
    (tmp_path / "d").mkdir()
    real = tmp_path / "d" / "ck.npz"
    model, opt = small()
    save_checkpoint(real, model, opt, epoch=1)
    (tmp_path / "d" / "mid.npz").symlink_to("ck.npz")  # relative to its own folder
    (tmp_path / "top.npz").symlink_to(os.path.join("d", "mid.npz"))
    save_checkpoint(tmp_path / "top.npz", model, opt, epoch=5)
    assert (tmp_path / "top.npz").is_symlink() and (tmp_path / "d" / "mid.npz").is_symlink()
    assert load_checkpoint(real).epoch == 5


def test_a_dangling_symlink_creates_the_file_it_names(tmp_path):
    (tmp_path / "d").mkdir()
    link = tmp_path / "link.npz"
    link.symlink_to(tmp_path / "d" / "new.npz")
    model, opt = small()
    save_checkpoint(link, model, opt, epoch=1)
    assert link.is_symlink()
    assert load_checkpoint(tmp_path / "d" / "new.npz").epoch == 1


def test_a_symlink_to_a_fifo_is_refused_naming_both(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "ck.npz"
    link.symlink_to(fifo)
    model, opt = small()
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(link, model, opt, epoch=1)
    assert str(link) in str(info.value) and str(fifo) in str(info.value) and "FIFO" in str(info.value)
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(link).st_mode)


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    model, opt = small()
    with pytest.raises(CheckpointError, match="symbolic links"):
        save_checkpoint(tmp_path / "a", model, opt, epoch=1)


def test_check_target_accepts_a_regular_file_and_a_new_path(tmp_path):
    existing = tmp_path / "old.npz"
    existing.write_bytes(b"x")
    assert check_target(existing) == existing
    assert check_target(tmp_path / "new.npz") == tmp_path / "new.npz"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_target(tmp_path / "nodir" / "c.npz")


def test_a_failed_write_keeps_a_file_named_through_a_symlink(tmp_path, monkeypatch):
    from gpudense import checkpoint as ckpt_mod

    real = tmp_path / "ck.npz"
    model, opt = small()
    save_checkpoint(real, model, opt, epoch=1)
    good = real.read_bytes()
    link = tmp_path / "link.npz"
    link.symlink_to(real)

    def broken(f, **arrays):
        f.write(b"partial")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ckpt_mod.np, "savez", broken)
    with pytest.raises(OSError, match=str(real)):
        save_checkpoint(link, model, opt, epoch=2)
    assert real.read_bytes() == good and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz", "link.npz"]
    assert np.array_equal(load_checkpoint(link).params["0.w"], model.state_dict()["0.w"])


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import errno

    from gpudense import checkpoint as ckpt_mod

    model, opt = small()
    target = tmp_path / "ck.npz"

    def full(f, **arrays):
        f.write(b"PK\x03\x04")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_mod.np, "savez", full)
    with pytest.raises(OSError) as info:
        save_checkpoint(target, model, opt, epoch=1)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC and "\n" not in message and "[Errno" not in message
    assert message.startswith(f"cannot write checkpoint {target}: No space left on device")
    assert "free some space" in message
    assert not any(tmp_path.iterdir())
