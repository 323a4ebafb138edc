"""A writer killed outright (SIGKILL, out of memory) leaves its temporary file; the next save to that path
removes it, and leaves alone the temporary file of a writer still running and every other file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from gpudense import _files
from gpudense.checkpoint import load_checkpoint, save_checkpoint
from gpudense.nn import MLP

WRITER = r"""
import sys, time
from pathlib import Path
from gpudense._files import atomic_write

def write(f):
    f.write(b"PK\x03\x04 half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(600)

atomic_write(Path(sys.argv[1]), write, "checkpoint")
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kills a writer with SIGKILL")
def test_the_temporary_file_of_a_killed_writer_is_swept_by_the_next_save(tmp_path):
    path = tmp_path / "ck.npz"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        live = [p.name for p in tmp_path.iterdir()]
        assert len(live) == 1 and live[0].startswith(".ck.npz.") and live[0].endswith(".tmp")
        save_checkpoint(path, MLP([2, 2], backend="numpy", rng=0), epoch=1)  # the writer still runs
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ck.npz", *live])
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    save_checkpoint(path, MLP([2, 2], backend="numpy", rng=0), epoch=2)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]
    assert load_checkpoint(path).epoch == 2


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_orphans_of_that_path_are_removed(tmp_path):
    path = tmp_path / "ck.npz"
    host = _files._HOST
    files = {
        "dead here": f".ck.npz.{host}.{_dead_pid()}.0123abcd.tmp",
        "old, elsewhere": ".ck.npz.othermachine.4242.0123abcd.tmp",
    }
    kept = {
        "alive here": f".ck.npz.{host}.{os.getppid()}.0123abcd.tmp",
        "fresh, elsewhere": ".ck.npz.othermachine.4243.0123abcd.tmp",
        "another path's": f".other.npz.{host}.{_dead_pid()}.0123abcd.tmp",
        "not ours": ".ck.npz.backup",
    }
    for name in [*files.values(), *kept.values()]:
        (tmp_path / name).write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(tmp_path / files["old, elsewhere"], (old, old))
    save_checkpoint(path, MLP([2, 2], backend="numpy", rng=0), epoch=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ck.npz", *kept.values()])
