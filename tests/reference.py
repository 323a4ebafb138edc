"""An independent reference for the dense layer, written from the per-element formulas.

Explicit Python loops in float64 over batch, i, j: nothing here calls gpudense
or a matrix product, so a bug in gpudense's array code cannot hide in it.

    y[k, j]  = b[j] + sum_i x[k, i] w[i, j]
    dx[k, i] = sum_j dy[k, j] w[i, j]
    dw[i, j] = sum_k x[k, i] dy[k, j]
    db[j]    = sum_k dy[k, j]
"""

from __future__ import annotations

import numpy as np


def _rows(a, n):
    """``a`` of shape (..., n) as a float64 list of rows (leading dims flattened)."""
    a = np.asarray(a, dtype=np.float64)
    batch = int(np.prod(a.shape[:-1]))
    return a.reshape(batch, n).tolist()


def forward(x, w, b=None):
    n_in, n_out = np.shape(w)
    xs, ws = _rows(x, n_in), np.asarray(w, np.float64).tolist()
    bs = [0.0] * n_out if b is None else np.asarray(b, np.float64).tolist()
    y = [[bs[j] + sum(xk[i] * ws[i][j] for i in range(n_in)) for j in range(n_out)] for xk in xs]
    return np.array(y, np.float64).reshape(np.shape(x)[:-1] + (n_out,))


def backward(dy, x, w):
    """``(dx, dw, db)`` in float64."""
    n_in, n_out = np.shape(w)
    xs, dys, ws = _rows(x, n_in), _rows(dy, n_out), np.asarray(w, np.float64).tolist()
    batch = len(xs)
    dx = [[sum(dyk[j] * ws[i][j] for j in range(n_out)) for i in range(n_in)] for dyk in dys]
    dw = [[sum(xs[k][i] * dys[k][j] for k in range(batch)) for j in range(n_out)] for i in range(n_in)]
    db = [sum(dys[k][j] for k in range(batch)) for j in range(n_out)]
    return (
        np.array(dx, np.float64).reshape(np.shape(x)),
        np.array(dw, np.float64).reshape(n_in, n_out),
        np.array(db, np.float64).reshape(n_out),
    )


def abs_forward(x, w, b=None):
    """The same sums over |terms|: the scale that rounding errors are proportional to."""
    return forward(np.abs(np.asarray(x, np.float64)), np.abs(np.asarray(w, np.float64)),
                   None if b is None else np.abs(np.asarray(b, np.float64)))


def abs_backward(dy, x, w):
    return backward(np.abs(np.asarray(dy, np.float64)), np.abs(np.asarray(x, np.float64)),
                    np.abs(np.asarray(w, np.float64)))


def assert_close(got, ref, scale, terms, dtype, name):
    """Assert |got - ref| <= tol(dtype) * (terms + 1) * scale, element-wise.

    A sum of ``terms`` products computed in a floating type with unit roundoff
    u has error at most about ``terms * u * sum|products|`` (Higham, Accuracy
    and Stability of Numerical Algorithms, eq. 3.5); ``scale`` is that sum of
    magnitudes. The factor ``tol(dtype)`` is 2u, a safety margin of 2 over the
    bound for rounding of inputs and the product. For float16 this is the
    bound of accumulating in float16 itself (NumPy's float16 matmul); paths
    that accumulate in float32 meet it with room to spare.
    """
    got = np.asarray(got, np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != reference {ref.shape}"
    dt = np.dtype(dtype)
    u = np.finfo(dt).eps / 2
    tol = 2 * 2 * u * (terms + 1) * scale
    err = np.abs(got - ref)
    bad = ~(err <= tol)
    assert not bad.any(), (
        f"{name} ({dt}): {bad.sum()} of {bad.size} elements off; worst error "
        f"{err[bad].max()} vs tolerance {tol[bad].min()}"
    )


def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar f() with respect to every element of x (modified in place)."""
    g = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def random_inputs(rng, shape_x, n_out, dtype):
    """Standard-normal ``(x, w, b, dy)`` for a layer with ``x`` of shape ``shape_x``, in ``dtype``."""
    n_in = shape_x[-1]
    x = rng.standard_normal(shape_x).astype(dtype)
    w = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    dy = rng.standard_normal(tuple(shape_x[:-1]) + (n_out,)).astype(dtype)
    return x, w, b, dy


def host(a):
    """``a`` as a NumPy array (a host copy of a CuPy array); None stays None."""
    if a is None or isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)  # cupy.ndarray
    return get() if callable(get) else np.asarray(a)


def check_layer(x, w, b, dy, *, input_grad=True):
    """Run dense_forward / dense_backward on ``x, w, b, dy`` (NumPy or CuPy) and compare with the loops.

    The result must be on the inputs' backend, in their dtype, and within
    :func:`assert_close`'s bound of the float64 loop reference for y, dx, dw
    and db; ``dx`` is None when ``input_grad`` is False, ``db`` when ``b`` is.
    Returns the ``DenseGrads`` for further checks.
    """
    from gpudense import DenseGrads, dense_backward, dense_forward

    xh, wh, bh, dyh = (host(a) for a in (x, w, b, dy))
    dtype = xh.dtype
    n_in, n_out = wh.shape
    batch = int(np.prod(xh.shape[:-1]))

    y = dense_forward(x, w, b)
    assert type(y) is type(x) and y.dtype == dtype and y.shape == dyh.shape
    assert_close(host(y), forward(xh, wh, bh), abs_forward(xh, wh, bh), n_in, dtype, "y")

    g = dense_backward(dy, x, w, bias=b is not None, input_grad=input_grad)
    assert isinstance(g, DenseGrads)
    rdx, rdw, rdb = backward(dyh, xh, wh)
    sdx, sdw, sdb = abs_backward(dyh, xh, wh)
    if input_grad:
        assert type(g.dx) is type(x) and g.dx.dtype == dtype
        assert_close(host(g.dx), rdx, sdx, n_out, dtype, "dx")
    else:
        assert g.dx is None
    assert type(g.dw) is type(x) and g.dw.dtype == dtype
    assert_close(host(g.dw), rdw, sdw, batch, dtype, "dw")
    if b is None:
        assert g.db is None
    else:
        assert type(g.db) is type(x) and g.db.dtype == dtype
        assert_close(host(g.db), rdb, sdb, batch, dtype, "db")
    return g
