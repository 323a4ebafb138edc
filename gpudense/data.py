"""Data for ``gpudense train``: scikit-learn's bundled digits, and a synthetic classification set.

Both give a :class:`Dataset` of host (NumPy) arrays: features ``x`` of shape
``(n, n_features)`` in the requested float dtype and integer labels ``y`` of
shape ``(n,)``, split into train and test parts.
:func:`gpudense.training.to_device` copies them to a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpudense._checks import as_generator, float_dtype, int_at_least

__all__ = ["Dataset", "digits_arrays", "load_digits", "make_synthetic", "stratified_split"]


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays, on the host (or, after :func:`gpudense.training.to_device`, a device).

    Attributes:
        name: ``"digits"`` or ``"synthetic"``.
        x_train, y_train, x_test, y_test: features ``(n, n_features)`` and
            int64 labels ``(n,)``.
        n_classes: Number of classes; labels lie in ``[0, n_classes)``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        """Features per sample."""
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.x_train.shape[0]}, test={self.x_test.shape[0]}, "
            f"features={self.n_features}, classes={self.n_classes}, dtype={self.x_train.dtype})"
        )


def stratified_split(y: np.ndarray, *, test_fraction: float, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` that hold out ``test_fraction`` of every class.

    Each class's samples are shuffled with ``rng`` and the first
    ``round(test_fraction * count)`` go to the test set, so class proportions
    are kept in both parts. Both index arrays are sorted.

    Args:
        y: Integer labels, shape ``(n,)``.
        test_fraction: In (0, 1).
        rng: A ``numpy.random.Generator`` or an int seed.

    Example:
        >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1]), test_fraction=0.5, rng=0)
        >>> len(train), len(test)
        (3, 3)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}")
    y = np.asarray(y)
    gen = as_generator(rng)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        gen.shuffle(idx)
        test.append(idx[: int(round(test_fraction * idx.size))])
    test_idx = np.sort(np.concatenate(test)) if test else np.empty(0, np.int64)
    mask = np.ones(y.shape[0], bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def load_digits(
    *, test_fraction: float = 0.2, seed: int = 0, dtype: Any = "float32", standardize: bool = True
) -> Dataset:
    """scikit-learn's handwritten digits: 1,797 8x8 images, 10 classes, bundled (no download).

    The split is stratified by class with a generator seeded by ``seed``
    (359 test samples at the default 0.2). With ``standardize`` (default),
    each pixel is shifted and scaled by the training part's mean and standard
    deviation (pixels constant in training, such as the always-blank corners,
    are only shifted); otherwise pixels (0..16) are scaled to [0, 1].

    The images are read by :func:`digits_arrays` straight from the file
    scikit-learn ships, without importing ``sklearn.datasets``.

    Raises:
        RuntimeError: scikit-learn is not installed (``pip install gpudense[train]``).

    Example:
        >>> load_digits().x_train.shape
        (1438, 64)
    """
    dt = float_dtype(dtype)
    pixels, target = digits_arrays()
    x = pixels / 16.0
    y = target
    gen = np.random.default_rng(int_at_least("seed", seed, 0))
    train, test = stratified_split(y, test_fraction=test_fraction, rng=gen)
    if standardize:
        mean = x[train].mean(axis=0)
        std = x[train].std(axis=0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    x = x.astype(dt)
    return Dataset("digits", x[train], y[train], x[test], y[test], n_classes=10)


#: The digits file inside the scikit-learn package (as ``sklearn.datasets.load_digits`` reads it).
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The raw digits: pixels ``(1797, 64)`` float64 in 0..16 and labels ``(1797,)`` int64.

    The same arrays as ``sklearn.datasets.load_digits()``'s ``data`` and
    ``target``, read from the same gzip-compressed CSV file in scikit-learn's
    package folder. Importing ``sklearn.datasets`` costs about a second (it
    imports SciPy); finding the file and parsing it takes a few
    milliseconds. Where the file is not where scikit-learn 0.2x-1.x keeps it,
    ``sklearn.datasets.load_digits`` is called instead.

    Raises:
        RuntimeError: scikit-learn is not installed.

    Example:
        >>> pixels, labels = digits_arrays()
        >>> pixels.shape, labels[:5].tolist()
        ((1797, 64), [0, 1, 2, 3, 4])
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None:
        raise RuntimeError(
            "the digits dataset needs scikit-learn (it is not installed); "
            "install it with pip install 'gpudense[train]'"
        )
    for folder in spec.submodule_search_locations or ():
        path = Path(folder).joinpath(*DIGITS_FILE)
        if path.is_file():
            import gzip

            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1], data[:, -1].astype(np.int64)
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise RuntimeError(
            f"the digits dataset needs scikit-learn ({exc}); install it with pip install 'gpudense[train]'"
        ) from exc
    bunch = sk_load_digits()
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.int64)


def make_synthetic(
    n_samples: int,
    n_features: int,
    n_classes: int,
    *,
    seed: int = 0,
    dtype: Any = "float32",
    test_fraction: float = 0.2,
    chunk_size: int = 65536,
    separation: float = 3.0,
) -> Dataset:
    """A Gaussian-blobs classification set, generated deterministically in chunks.

    Each class ``c`` has a centre ``mu_c`` drawn once from
    ``N(0, separation**2 / n_features)`` per feature (so centres lie about
    ``separation * sqrt(2)`` noise standard deviations apart); sample ``k``
    has a uniform random label and ``x = mu_label + N(0, 1)``. Chunk ``i``
    draws from its own generator ``default_rng([seed, i])``, so the set
    depends only on the arguments (not on memory or threads), and is written
    straight into the final array in ``dtype``: memory is the set itself plus
    one float32 chunk. The last ``test_fraction`` of the samples is the test
    set (samples are independent, so a contiguous split is a random one).

    Args:
        n_samples: Total samples (train + test), >= 2.
        n_features, n_classes: Positive sizes; ``n_classes >= 2``.
        seed: Seed of the centres and of every chunk.
        dtype: float16, float32 or float64.
        test_fraction: In (0, 1).
        chunk_size: Samples generated at once.
        separation: Centre scale (see above); larger is easier.

    Example:
        >>> ds = make_synthetic(100, 5, 3, seed=0)
        >>> ds.x_train.shape, ds.x_test.shape
        ((80, 5), (20, 5))
    """
    for name, value, low in (("n_samples", n_samples, 2), ("n_features", n_features, 1),
                             ("n_classes", n_classes, 2), ("chunk_size", chunk_size, 1)):
        int_at_least(name, value, low)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}")
    dt = float_dtype(dtype)
    n_test = max(1, int(round(test_fraction * n_samples)))
    if n_test >= n_samples:
        raise ValueError(f"n_samples={n_samples} leaves no training samples at test_fraction={test_fraction}")
    centres = np.random.default_rng([int_at_least("seed", seed, 0), 2**32 - 1]).normal(
        0.0, separation / np.sqrt(n_features), size=(n_classes, n_features)
    ).astype(np.float32)
    x = np.empty((n_samples, n_features), dt)
    y = np.empty(n_samples, np.int64)
    buf = np.empty((min(chunk_size, n_samples), n_features), np.float32)
    for i, start in enumerate(range(0, n_samples, chunk_size)):
        stop = min(start + chunk_size, n_samples)
        gen = np.random.default_rng([seed, i])
        labels = gen.integers(0, n_classes, size=stop - start)
        chunk = buf[: stop - start]
        gen.standard_normal(out=chunk, dtype=np.float32)
        chunk += centres[labels]
        x[start:stop] = chunk
        y[start:stop] = labels
    cut = n_samples - n_test
    return Dataset("synthetic", x[:cut], y[:cut], x[cut:], y[cut:], n_classes=int(n_classes))
