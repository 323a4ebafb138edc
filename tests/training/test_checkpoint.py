"""Checkpoints: round trip, resume equivalence, atomic writes, and every bad file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile

import numpy as np
import pytest

from gpudense import checkpoint as ckpt_mod
from gpudense.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpudense.nn import MLP
from gpudense.optim import SGD, Adam

from small_models import rewrite, trained


@pytest.fixture
def saved(tmp_path):
    model, opt = trained()
    rng = np.random.default_rng(123)
    rng.random(10)  # advance it: the saved state is not the initial one
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, epoch=3, rng=rng, extra={"note": "hi", "history": [1.5, 0.25]})
    return path, model, opt, rng


def test_round_trip(saved):
    path, model, opt, rng = saved
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 3
    assert ckpt.model_config == model.config()
    assert ckpt.extra == {"note": "hi", "history": [1.5, 0.25]}
    model2 = MLP([4, 6, 3], backend="numpy", rng=99)
    opt2 = Adam(model2, lr=0.5)
    rng2 = np.random.default_rng(0)
    ckpt.restore(model2, opt2, rng2)
    for a, b in zip(model.param_grads(), model2.param_grads()):
        np.testing.assert_array_equal(a.param, b.param)
        assert a.param.dtype == b.param.dtype
    assert opt2.hyperparams == opt.hyperparams and opt2.step_count == opt.step_count
    for slot in ("m", "v"):
        for name, a in opt.state[slot].items():
            np.testing.assert_array_equal(opt2.state[slot][name], a)
    np.testing.assert_array_equal(rng2.random(5), rng.random(5))  # the generator continues where it was


def test_file_is_plain_npz_without_pickles(saved):
    path = saved[0]
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    assert {"meta.npy", "param/0.w.npy", "param/2.b.npy", "optim/m/0.w.npy", "optim/v/2.b.npy"} <= names
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"][()]))
        assert z["param/0.w"].dtype == np.float32
    assert meta["format"] == "gpudense-checkpoint" and meta["epoch"] == 3
    assert meta["rng"]["bit_generator"] == "PCG64"


def test_reading_never_modifies_the_file(saved):
    path, model, opt, rng = saved
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns)
    os.chmod(path, 0o444)  # read-only: loading must not need write access
    try:
        fresh = MLP([4, 6, 3], backend="numpy", rng=1)
        load_checkpoint(path).restore(fresh, Adam(fresh), np.random.default_rng())
    finally:
        os.chmod(path, 0o644)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns) == before


def test_checkpoint_before_first_step_restores(tmp_path):
    model = MLP([3, 2], backend="numpy", rng=0)
    opt = SGD(model, lr=0.1, momentum=0.9)  # momentum slot exists but holds no array yet
    save_checkpoint(tmp_path / "c.npz", model, opt, epoch=0)
    opt2 = SGD(model, lr=0.1, momentum=0.9)
    load_checkpoint(tmp_path / "c.npz").restore(model, opt2)
    assert opt2.state == {"momentum": {}, "master": {}}



class _Weights:
    """A model with only ``param_grads()`` and ``zero_grad()``: no backend, no load_state_dict."""

    def __init__(self, w, b):
        from gpudense.layer import ParamGrad

        self._pg = ParamGrad
        self.params = {"w": w, "b": b}

    def param_grads(self):
        return [self._pg(k, p, None) for k, p in self.params.items()]

    def zero_grad(self):
        pass


def test_a_model_with_only_param_grads_round_trips(tmp_path):
    gen = np.random.default_rng(4)
    saved = _Weights(gen.standard_normal((3, 2)), gen.standard_normal(2))
    save_checkpoint(tmp_path / "p.npz", saved, SGD(saved, lr=0.1), epoch=2)
    target = _Weights(np.zeros((3, 2)), np.zeros(2))
    w_array = target.params["w"]
    opt = SGD(target, lr=0.5)
    load_checkpoint(tmp_path / "p.npz").restore(target, opt)
    assert target.params["w"] is w_array  # written in place
    np.testing.assert_array_equal(target.params["w"], saved.params["w"])
    np.testing.assert_array_equal(target.params["b"], saved.params["b"])
    assert opt.lr == 0.1


def test_restore_needs_a_generator(saved):
    path, model, opt, _ = saved
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator or None; got int"):
        fresh = MLP([4, 6, 3], backend="numpy", rng=1)
        load_checkpoint(path).restore(fresh, Adam(fresh), 7)


# -- every bad file ---------------------------------------------------------------------------


def _bad_files(tmp_path, src):
    data = src.read_bytes()
    yield "missing file", tmp_path / "nope.npz", "does not exist"
    (tmp_path / "empty.npz").write_bytes(b"")
    yield "empty file", tmp_path / "empty.npz", "truncated or corrupt"
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    yield "truncated", tmp_path / "trunc.npz", "truncated or corrupt"
    (tmp_path / "tail.npz").write_bytes(data[:-10])
    yield "last bytes cut", tmp_path / "tail.npz", "truncated or corrupt"
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    yield "random bytes", tmp_path / "random.npz", "truncated or corrupt"
    flipped = bytearray(data)
    # flip a byte inside the stored array data (the zip's CRC catches it)
    with zipfile.ZipFile(src) as z:
        info = z.getinfo("param/0.w.npy")
    local_header = 30 + len(info.filename.encode()) + len(info.extra)
    pos = info.header_offset + local_header + info.compress_size - 3
    flipped[pos] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    yield "corrupt byte", tmp_path / "flipped.npz", "truncated or corrupt"
    np.save(tmp_path / "single.npy", np.zeros(3))
    yield "a .npy", tmp_path / "single.npy", "single .npy"
    with open(tmp_path / "pickled.npz", "wb") as f:
        np.savez(f, meta=np.array([{"a": 1}], dtype=object))
    yield "pickled object", tmp_path / "pickled.npz", "truncated or corrupt"
    rewrite(src, tmp_path / "nometa.npz", lambda a: a.pop("meta"))
    yield "no meta", tmp_path / "nometa.npz", "no 'meta'"
    rewrite(src, tmp_path / "badjson.npz", lambda a: a.update(meta=np.array("{not json")))
    yield "bad json", tmp_path / "badjson.npz", "not valid JSON"
    rewrite(src, tmp_path / "format.npz", lambda a: a.update(meta=np.array(json.dumps({"format": "x"}))))
    yield "other format", tmp_path / "format.npz", "not a gpudense checkpoint"

    def bump_version(a):
        meta = json.loads(str(a["meta"][()]))
        meta["version"] = 99
        a["meta"] = np.array(json.dumps(meta))

    rewrite(src, tmp_path / "version.npz", bump_version)
    yield "future version", tmp_path / "version.npz", "version 99"
    rewrite(src, tmp_path / "intarr.npz", lambda a: a.update({"param/0.b": np.zeros(6, np.int64)}))
    yield "integer array", tmp_path / "intarr.npz", "expected a floating array"
    rewrite(src, tmp_path / "stray.npz", lambda a: a.update(stray=np.zeros(1)))
    yield "unexpected entry", tmp_path / "stray.npz", "unexpected entry 'stray'"
    (tmp_path / "dir.npz").mkdir()
    yield "a directory", tmp_path / "dir.npz", "cannot read"


def test_every_unreadable_file_raises_checkpoint_error(saved, tmp_path):
    path = saved[0]
    cases = list(_bad_files(tmp_path, path))
    assert len(cases) == 15
    for what, bad, match in cases:
        try:
            load_checkpoint(bad)
        except CheckpointError as exc:
            assert re.search(match, str(exc)), f"{what}: {exc}"
            assert "\n" not in str(exc), f"{what}: the message must fit on one line"
        else:
            pytest.fail(f"{what}: no CheckpointError")
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.pop("param/2.b"), r"missing \['2.b'\]"),
        (lambda a: a.update({"param/0.w": np.zeros((6, 4), np.float32)}), r"0.w has shape \(6, 4\)"),
        (lambda a: a.update({"param/0.w": a["param/0.w"].astype(np.float64)}), "0.w has dtype float64"),
        (lambda a: a.update({"param/9.w": np.zeros(2, np.float32)}), r"unexpected \['9.w'\]"),
        (lambda a: a.update({"optim/m/0.w": np.zeros((2, 2), np.float32)}), r"m/0.w: expected shape"),
        (lambda a: a.update({"optim/v/0.b": np.zeros(6, np.float64)}), r"v/0.b: expected dtype float32"),
        (lambda a: a.update({"optim/z/0.b": np.zeros(6, np.float32)}), r"undeclared slots \['z'\]"),
    ],
)
def test_mismatched_contents(saved, tmp_path, change, match):
    path, model, opt, _ = saved
    bad = rewrite(path, tmp_path / "bad.npz", change)
    target = MLP([4, 6, 3], backend="numpy", rng=5)
    before = [pg.param.copy() for pg in target.param_grads()]
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(bad).restore(target, Adam(target), np.random.default_rng())
    for b, pg in zip(before, target.param_grads()):  # nothing changed on failure
        np.testing.assert_array_equal(b, pg.param)


def _edit_meta(edit):
    def change(arrays):
        meta = json.loads(str(arrays["meta"][()]))
        edit(meta)
        arrays["meta"] = np.array(json.dumps(meta))

    return change


def _drop_slot_arrays(slot):
    def change(arrays):
        for key in [k for k in arrays if k.startswith(f"optim/{slot}/")]:
            del arrays[key]

    return change


def _set(path, value):
    def edit(meta):
        d = meta
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return _edit_meta(edit)


def _broken_rng_state(meta):
    meta["rng"]["state"]["state"] = "not a number"  # right generator name, unusable state


@pytest.mark.parametrize(
    "change,match",
    [
        # (a) step > 0 but the optimizer's slot arrays are missing
        (lambda a: a.pop("optim/m/0.w"), r"optimizer state m: .*missing \['0.w'\]"),
        (_drop_slot_arrays("v"), r"optimizer state v: .*missing \['0.b', '0.w', '2.b', '2.w'\]"),
        (_set(("optimizer", "param_steps"), {}), r"optimizer state m: .*unexpected \['0.b', '0.w'"),
        (_set(("optimizer", "param_steps", "0.w"), 4), r"param_steps\['0.w'\] must be an int in \[1, step=3\]"),
        # (b) hyper-parameters out of the constructor's ranges
        (_set(("optimizer", "hyperparams", "beta1"), 5.0), r"betas\[0\] must lie in \[0.0, 1.0\); got 5.0"),
        (_set(("optimizer", "hyperparams", "eps"), -1.0), "eps must lie in"),
        (_set(("optimizer", "hyperparams", "lr"), 0), "lr must lie in"),
        (_set(("optimizer", "step"), -2), "step must be a non-negative int"),
        # (c) JSON fields of the wrong type
        (_set(("model",), [4, 6, 3]), "meta model must be an object; got"),
        (_set(("model", "sizes"), "4-6-3"), "meta model sizes must be a list"),
        (_set(("model", "bias"), 1), "meta model bias must be true or false"),
        (_set(("extra",), "notes"), "meta extra must be an object; got 'notes'"),
        (_set(("extra",), None), "meta extra must be an object; got None"),
        (_set(("rng",), [1, 2]), r"meta rng must be an object; got \[1, 2\]"),
        (_set(("optimizer", "hyperparams"), [0.01]), "meta optimizer hyperparams must be an object"),
        (_set(("optimizer", "hyperparams", "lr"), "0.01"), "hyper-parameter lr must be a number"),
        (_set(("optimizer", "step"), "3"), "meta optimizer step must be an integer"),
        (_set(("optimizer", "param_steps"), [3, 3]), "meta optimizer param_steps must be an object"),
        (_set(("optimizer", "slots"), "mv"), "meta optimizer slots must be a list"),
        (_set(("optimizer", "type"), 7), "meta optimizer type must be a string"),
        # (d) a bad RNG state: found before the model and optimizer are touched
        (_edit_meta(_broken_rng_state), "bad RNG state"),
    ],
)
def test_invalid_meta_is_one_clear_error_and_changes_nothing(saved, tmp_path, change, match):
    path = saved[0]
    bad = rewrite(path, tmp_path / "bad.npz", change)
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    target, opt = trained(seed=9)  # a model and optimizer with state of their own, to be kept
    rng = np.random.default_rng(5)
    before = ([pg.param.copy() for pg in target.param_grads()], opt.state_dict(), rng.bit_generator.state)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad).restore(target, opt, rng)
    assert re.search(match, str(info.value)), str(info.value)
    assert "\n" not in str(info.value)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == digest  # the file is untouched
    for b, pg in zip(before[0], target.param_grads()):
        np.testing.assert_array_equal(b, pg.param)
    after = opt.state_dict()
    assert {k: after[k] for k in ("type", "hyperparams", "step", "param_steps")} == {
        k: before[1][k] for k in ("type", "hyperparams", "step", "param_steps")}
    for slot, named in before[1]["slots"].items():
        assert sorted(after["slots"][slot]) == sorted(named)
        for name, a in named.items():
            np.testing.assert_array_equal(after["slots"][slot][name], a)
    assert rng.bit_generator.state == before[2]


def test_float16_checkpoint_restores_master_weights(tmp_path):
    model, opt = trained(dtype="float16")
    assert sorted(opt.state["master"]) == ["0.b", "0.w", "2.b", "2.w"]
    save_checkpoint(tmp_path / "h.npz", model, opt, epoch=1)
    model2 = MLP([4, 6, 3], dtype="float16", backend="numpy", rng=1)
    opt2 = Adam(model2, lr=0.01)
    load_checkpoint(tmp_path / "h.npz").restore(model2, opt2)
    assert opt2.param_steps == opt.param_steps == {"0.w": 3, "0.b": 3, "2.w": 3, "2.b": 3}
    for name, a in opt.state["master"].items():
        assert opt2.state["master"][name].dtype == np.float32
        np.testing.assert_array_equal(opt2.state["master"][name], a)


@pytest.mark.parametrize(
    "model,opt_factory,match",
    [
        (MLP([4, 7, 3], backend="numpy", rng=0), Adam, r"sizes=\[4, 6, 3\]; this model has sizes=\[4, 7, 3\]"),
        (MLP([4, 6, 3], activation="tanh", backend="numpy", rng=0), Adam, "activation='relu'"),
        (MLP([4, 6, 3], dtype="float64", backend="numpy", rng=0), Adam, "dtype='float32'"),
        (MLP([4, 6, 3], backend="numpy", rng=0), lambda m: SGD(m, momentum=0.9), "is for Adam"),
    ],
)
def test_wrong_model_or_optimizer(saved, model, opt_factory, match):
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(saved[0]).restore(model, opt_factory(model))


def test_missing_parts(tmp_path):
    model, _ = trained()
    save_checkpoint(tmp_path / "w.npz", model, epoch=1)  # weights only
    ckpt = load_checkpoint(tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="no optimizer state"):
        ckpt.restore(model, Adam(model))
    with pytest.raises(CheckpointError, match="no RNG state"):
        ckpt.restore(model, rng=np.random.default_rng())
    ckpt.restore(model)  # the weights alone are fine
    with pytest.raises(CheckpointError, match="RNG state is for 'PCG64'"):
        save_checkpoint(tmp_path / "r.npz", model, epoch=1, rng=np.random.default_rng())
        load_checkpoint(tmp_path / "r.npz").restore(model, rng=np.random.Generator(np.random.MT19937(0)))


def test_save_argument_errors(tmp_path):
    model, opt = trained()
    with pytest.raises(ValueError, match="epoch"):
        save_checkpoint(tmp_path / "c.npz", model, opt, epoch=-1)
    with pytest.raises(TypeError, match="rng"):
        save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1, rng=np.random.RandomState(0))
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1, extra={"x": object()})
    with pytest.raises(FileNotFoundError):
        save_checkpoint(tmp_path / "no" / "dir" / "c.npz", model, opt, epoch=1)
    assert not list(tmp_path.iterdir())


# -- atomic writes ------------------------------------------------------------------------


def test_failure_while_writing_leaves_the_old_file(saved, monkeypatch):
    path, model, opt, rng = saved
    good = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")  # partial output, then the disk "fills up"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, opt, epoch=4, rng=rng)
    assert path.read_bytes() == good
    assert load_checkpoint(path).epoch == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.npz"]  # no temporary left


def test_failure_at_rename_leaves_the_old_file(saved, monkeypatch):
    path, model, opt, rng = saved
    good = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ckpt_mod.os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_checkpoint(path, model, opt, epoch=4, rng=rng)
    assert path.read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.npz"]


def test_write_is_flushed_fsynced_and_renamed(tmp_path, monkeypatch):
    model, opt = trained()
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ckpt_mod.os, "fsync", lambda fd: calls.append(("fsync", fd)) or real_fsync(fd))
    monkeypatch.setattr(ckpt_mod.os, "replace", lambda a, b: calls.append(("replace", b)) or real_replace(a, b))
    target = tmp_path / "c.npz"
    save_checkpoint(target, model, opt, epoch=1)
    kinds = [c[0] for c in calls]
    assert kinds == ["fsync", "replace", "fsync"]  # the file, the rename, then the directory
    assert calls[1][1] == target
    assert load_checkpoint(target).epoch == 1


# -- resuming gives the same run ----------------------------------------------------------


@pytest.mark.digits
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    from gpudense.cli.train import parse_args, train

    common = ["--backend", "numpy", "--quiet", "--hidden", "32", "--batch-size", "64", "--seed", "3"]
    full = train(parse_args([*common, "--epochs", "4"]), out=io.StringIO())
    path = str(tmp_path / "run.npz")
    train(parse_args([*common, "--epochs", "2", "--save", path]), out=io.StringIO())
    resumed = train(parse_args([*common, "--epochs", "4", "--resume", path]), out=io.StringIO())
    assert resumed.history.loss == full.history.loss  # exactly, epoch by epoch
    assert resumed.history.train_acc == full.history.train_acc
    assert resumed.history.test_acc == full.history.test_acc
    assert resumed.test_accuracy == full.test_accuracy
    for a, b in zip(full.model.param_grads(), resumed.model.param_grads()):
        np.testing.assert_array_equal(a.param, b.param)
