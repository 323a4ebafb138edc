"""SIGTERM, SIGHUP and SIGINT end a run alike: no temporary file, the last checkpoint intact,
exit status 128 + the signal, one line saying where the last checkpoint is.

Each test runs ``gpudense train`` in a real child process. The child holds still at a chosen point
(in the middle of writing the second checkpoint, or inside the second epoch) and says so by creating
a marker file; the test then sends the signal. Waiting for the marker is the only wait: no timing is
asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gpudense.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]

# The child: gpudense's command line, with one function replaced so that it holds still at the
# chosen call. ``hold`` is "save:N" (the N-th np.savez, i.e. the N-th checkpoint, half written)
# or "epoch:N" (the N-th train_epoch call).
CHILD = textwrap.dedent('''
    import os, sys, time
    import numpy as np
    from gpudense import training
    from gpudense.cli import main

    marker, (hold, at) = sys.argv[1], sys.argv[2].split(":")
    calls = {"n": 0}

    def hold_still():
        open(marker, "w").close()
        while True:
            time.sleep(0.01)

    if hold == "save":
        real_savez = np.savez

        def savez(f, **arrays):
            calls["n"] += 1
            if calls["n"] == int(at):
                f.write(b"PK\\x03\\x04" + bytes(1 << 20))  # a megabyte of a checkpoint on disk
                f.flush()
                hold_still()
            real_savez(f, **arrays)

        np.savez = savez
    else:
        real_epoch = training.train_epoch

        def train_epoch(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == int(at):
                hold_still()
            return real_epoch(*args, **kwargs)

        training.train_epoch = train_epoch
    sys.exit(main(sys.argv[3:]))
''')


def run_until_held(tmp_path, hold, argv):
    """Start the child; return it once it holds still (its marker exists)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / "held"
    env = {**os.environ, "GPUDENSE_BACKEND": "numpy"}
    env.pop("GPUDENSE_DEBUG", None)
    proc = subprocess.Popen([sys.executable, str(script), str(marker), hold, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the child ended before holding still (status {proc.returncode}): {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the child never held still")
        time.sleep(0.05)
    return proc


def stop(proc, sig):
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the child did not end after {sig.name}: {err}")
    return proc.returncode, out, err


def train_argv(ckpt, *more):
    # A large model, so the checkpoint is tens of megabytes (64-1536-1536-10, Adam: ~37 MB).
    return ["train", "--quiet", "--epochs", "4", "--hidden", "1536,1536", "--save", str(ckpt), *more]


@pytest.mark.digits
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_during_a_save_leaves_the_last_checkpoint_and_no_temporary(sig, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    ckpt = runs / "ck.npz"
    proc = run_until_held(tmp_path, "save:2", train_argv(ckpt))
    assert len(list(runs.iterdir())) == 2  # the epoch-1 checkpoint and the half-written temporary
    status, out, err = stop(proc, sig)
    assert status == 128 + sig
    assert sorted(p.name for p in runs.iterdir()) == ["ck.npz"]  # the temporary is gone
    assert load_checkpoint(ckpt).epoch == 1
    assert err == f"gpudense train: stopped by {sig.name}; the last complete checkpoint is {ckpt} (epoch 1)\n"
    assert "epoch   1/4" in out


@pytest.mark.digits
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_during_training_keeps_the_last_checkpoint(sig, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    ckpt = runs / "ck.npz"
    proc = run_until_held(tmp_path, "epoch:2", train_argv(ckpt))
    good = ckpt.read_bytes()
    status, out, err = stop(proc, sig)
    assert status == 128 + sig
    assert sorted(p.name for p in runs.iterdir()) == ["ck.npz"] and ckpt.read_bytes() == good
    assert err == f"gpudense train: stopped by {sig.name}; the last complete checkpoint is {ckpt} (epoch 1)\n"


@pytest.mark.digits
def test_a_signal_without_save_says_no_checkpoint_was_written(tmp_path):
    proc = run_until_held(tmp_path, "epoch:2", ["train", "--quiet", "--epochs", "3", "--hidden", "16"])
    status, out, err = stop(proc, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM
    assert err == "gpudense train: stopped by SIGTERM; no checkpoint was written (no --save given)\n"


@pytest.mark.digits
def test_a_signal_during_the_first_save_says_none_was_written(tmp_path):
    ckpt = tmp_path / "runs" / "ck.npz"
    ckpt.parent.mkdir()
    proc = run_until_held(tmp_path, "save:1", train_argv(ckpt))
    status, out, err = stop(proc, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM
    assert not any(ckpt.parent.iterdir())
    assert err == f"gpudense train: stopped by SIGTERM; no checkpoint was written ({ckpt} was not created)\n"


@pytest.mark.digits
def test_a_resumed_run_stopped_before_its_first_save_names_the_checkpoint_it_resumed(tmp_path):
    first = tmp_path / "first.npz"
    done = subprocess.run([sys.executable, "-m", "gpudense", "train", "--backend", "numpy", "--quiet",
                           "--epochs", "1", "--hidden", "16", "--save", str(first)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    later = tmp_path / "later.npz"
    # resumed at epoch 1: its second train_epoch call is epoch 3, after later.npz got epoch 2
    proc = run_until_held(tmp_path, "epoch:2", ["train", "--quiet", "--epochs", "4", "--hidden", "16",
                                              "--resume", str(first), "--save", str(later)])
    status, out, err = stop(proc, signal.SIGHUP)
    assert status == 128 + signal.SIGHUP
    assert err == f"gpudense train: stopped by SIGHUP; the last complete checkpoint is {later} (epoch 2)\n"
    assert load_checkpoint(first).epoch == 1 and load_checkpoint(later).epoch == 2
