"""A memory-mapped dataset larger than the process may allocate trains batch by batch.

The child process caps its data segment (``RLIMIT_DATA``: heap and private
anonymous memory, what a copy of the features would need) at what it already
uses plus 96 MiB, then trains on 128 MiB of features. A read-only memory map
of the file is a shared file mapping, which the limit does not count; a copy
of the features is private memory, which it does. The same child loading the
features whole (``numpy.load`` without ``mmap_mode``) must fail under the
same cap: that shows the cap bites.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

resource = pytest.importorskip("resource", reason="RLIMIT_DATA needs the POSIX resource module")

CHILD = r"""
import resource, sys
import numpy as np
from gpudense.datasets import load_dataset
from gpudense.nn import MLP
from gpudense.optim import SGD
from gpudense.training import TrainConfig, fit, evaluate

def vm_data():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmData:")).split()[1]) * 1024

model = MLP([256, 2], backend="numpy", rng=0)
model(np.zeros((1024, 256), np.float32))  # OpenBLAS allocates its work buffer (32 MiB) at its first
model.backward(np.zeros((1024, 2), np.float32))  # products of this size: before the cap
model.zero_grad()
cap = vm_data() + 48 * 2**20
resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
folder, mode = sys.argv[1], sys.argv[2]
if mode == "whole":
    x = np.load(folder + "/x.npy")
    print("read whole", x.shape)
    sys.exit(0)
ds = load_dataset(folder, seed=0)
history = fit(model, SGD(model, lr=0.05), ds, TrainConfig(epochs=1, batch_size=1024, rng=0))
print("trained", type(ds.x_train).__name__, history.test_acc[-1], evaluate(model, ds.x_train, ds.y_train))
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    n, f = 131072, 256  # 128 MiB of float32 features
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, f))
    y = np.arange(n, dtype=np.int64) % 2
    gen = np.random.default_rng(0)
    for start in range(0, n, 16384):
        stop = start + 16384
        x[start:stop] = gen.standard_normal((16384, f), dtype=np.float32)
        x[start:stop, 0] += 4.0 * y[start:stop] - 2.0  # feature 0 tells the classes apart
    x.flush()
    del x
    np.save(folder / "y.npy", y)
    return folder


def _child(folder, mode):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", CHILD, str(folder), mode], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmData from /proc (Linux)")
def test_trains_on_features_larger_than_its_memory_cap(big):
    whole = _child(big, "whole")
    assert whole.returncode != 0 and "MemoryError" in whole.stderr, whole.stdout + whole.stderr
    run = _child(big, "mmap")
    assert run.returncode == 0, run.stderr
    words = run.stdout.split()
    assert words[:2] == ["trained", "Rows"]
    assert float(words[2]) > 0.9 and float(words[3]) > 0.9  # it learned from every batch it read
