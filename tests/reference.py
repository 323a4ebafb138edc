"""An independent reference for the dense layer, written from the per-element formulas.

Explicit Python loops in float64 over batch, i, j: nothing here calls gpudense
or a matrix product, so a bug in gpudense's array code cannot hide in it.

    y[k, j]  = b[j] + sum_i x[k, i] w[i, j]
    dx[k, i] = sum_j dy[k, j] w[i, j]
    dw[i, j] = sum_k x[k, i] dy[k, j]
    db[j]    = sum_k dy[k, j]
"""

from __future__ import annotations

import math

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


# --------------------------------------------------------------------------
# A dense layer with an activation: y = act(x @ w + b)
# --------------------------------------------------------------------------


def act(name, v):
    """The activation of each element of ``v`` (float64 loops, from the definitions); None: identity."""
    out = np.empty(np.shape(v))
    for i, z in np.ndenumerate(np.asarray(v, np.float64)):
        if name is None:
            out[i] = z
        elif name == "relu":
            out[i] = z if z > 0 else 0.0
        elif name == "tanh":
            out[i] = math.tanh(z)
        else:  # GELU, tanh form: z/2 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))
            out[i] = 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3))) \
                if abs(z) < 1e100 else (z if z > 0 else 0.0)
    return out


def act_grad(name, v):
    """d act / dz of each element (float64 loops); relu's is 0 at z <= 0; None: 1."""
    out = np.empty(np.shape(v))
    c, a = math.sqrt(2.0 / math.pi), 0.044715
    for i, z in np.ndenumerate(np.asarray(v, np.float64)):
        if name is None:
            out[i] = 1.0
        elif name == "relu":
            out[i] = 1.0 if z > 0 else 0.0
        elif name == "tanh":
            out[i] = 1.0 - math.tanh(z) ** 2
        else:
            t = math.tanh(c * (z + a * z**3)) if abs(z) < 1e100 else math.copysign(1.0, z)
            out[i] = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3.0 * a * z * z)
    return out


def check_layer_act(x, w, b, dy, activation, *, input_grad=True):
    """Run dense_act_forward / dense_act_backward (NumPy or CuPy) and compare with the float64 loops.

    ``activation`` None checks the plain layer through the same functions.

    The bounds, per element, with u_st the unit roundoff of the storage type
    and u_acc that of the type products and sums are computed in (float32
    for float16 and bfloat16, else the type itself):

    * z = x @ w + b: a length-n_in sum (n_in * u_acc) and at most two
      roundings to storage (the product, the bias add), on the scale
      s_z = sum |x w| + |b|: tol_z = 2 (n_in u_acc + 2 u_st) s_z;
    * y = act(z): |act'| <= 1.13 carries tol_z, plus the activation's own
      few roundings and tanh (32 u_acc (1 + |z|)) and one rounding of y;
    * dz = dy act'(z): |act''| <= 1 carries tol_z and the derivative's own
      roundings, plus one rounding of dz to storage: e_dz;
    * dx, dw, db: sums of dz times x or w (assert_close's bound on the exact
      dz's scale) plus the sums of |x| e_dz, |w| e_dz, e_dz.

    relu's derivative jumps at 0: where the computed z and the exact one
    straddle 0 (|z| below tol_z), the reference takes the side the computed
    output took (``y > 0``), so a kink within rounding distance is not
    counted as an error.
    """
    from gpudense.functional import DenseGrads, dense_act_backward, dense_act_forward

    xh, wh, bh, dyh = (host(a) for a in (x, w, b, dy))
    dtype = np.dtype(xh.dtype)
    wide = np.float32 if dtype.itemsize == 2 else dtype
    u_st, u_acc = _unit_roundoff(dtype), np.finfo(wide).eps / 2
    n_in, n_out = wh.shape
    batch = int(np.prod(xh.shape[:-1]))

    y, saved = dense_act_forward(x, w, b, activation=activation)
    assert type(y) is type(x) and y.dtype == dtype and y.shape == dyh.shape
    z_ref = forward(xh, wh, bh).reshape(batch, n_out)
    s_z = abs_forward(xh, wh, bh).reshape(batch, n_out)
    tol_z = 2 * (n_in * u_acc + 2 * u_st) * s_z
    y_ref = act(activation, z_ref)
    yh = np.asarray(host(y), np.float64).reshape(batch, n_out)
    tol_y = 1.13 * tol_z + 32 * u_acc * (1 + np.abs(z_ref)) + 2 * u_st * np.abs(y_ref)
    _assert_within("y", yh, y_ref, tol_y, dtype)

    g = dense_act_backward(dy, x, w, saved, activation=activation, bias=b is not None, input_grad=input_grad)
    assert isinstance(g, DenseGrads)
    d = act_grad(activation, z_ref)
    if activation == "relu":
        d = np.where(np.abs(z_ref) <= tol_z, (yh > 0).astype(np.float64), d)
    dyr = np.asarray(dyh, np.float64).reshape(batch, n_out)
    dz = dyr * d
    e_dz = np.abs(dyr) * (tol_z + 32 * u_acc * (1 + np.abs(z_ref))) + 2 * u_st * np.abs(dz)
    x2 = np.asarray(xh, np.float64).reshape(batch, n_in)
    w64 = np.asarray(wh, np.float64)

    def bound(terms, scale_exact, scale_err):
        return 2 * ((terms + 1) * u_acc + u_st) * scale_exact + scale_err

    if input_grad:
        assert type(g.dx) is type(x) and g.dx.dtype == dtype
        _assert_within("dx", np.asarray(host(g.dx), np.float64).reshape(batch, n_in), dz @ w64.T,
                       bound(n_out, np.abs(dz) @ np.abs(w64).T, e_dz @ np.abs(w64).T), dtype)
    else:
        assert g.dx is None
    assert type(g.dw) is type(x) and g.dw.dtype == dtype
    _assert_within("dw", np.asarray(host(g.dw), np.float64), x2.T @ dz,
                   bound(batch, np.abs(x2).T @ np.abs(dz), np.abs(x2).T @ e_dz), dtype)
    if b is None:
        assert g.db is None
    else:
        assert type(g.db) is type(x) and g.db.dtype == dtype
        _assert_within("db", np.asarray(host(g.db), np.float64), dz.sum(0),
                       bound(batch, np.abs(dz).sum(0), e_dz.sum(0)), dtype)
    return y, g


def _unit_roundoff(dtype):
    """Half the spacing at 1 of ``dtype`` (bfloat16: 2**-8, found by name without ml_dtypes' finfo)."""
    if np.dtype(dtype).name == "bfloat16":
        return 2.0**-8
    return float(np.finfo(dtype).eps) / 2


def _assert_within(name, got, ref, tol, dtype):
    err = np.abs(got - ref)
    bad = ~(err <= tol)
    assert not bad.any(), (
        f"{name} ({np.dtype(dtype).name}): {bad.sum()} of {bad.size} elements off; worst error "
        f"{err[bad].max()} vs tolerance {tol[bad].min()}"
    )
