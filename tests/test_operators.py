"""Tests for skydiff.operators: analytic fields, boundaries, numpy/torch round trips, autograd."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from skydiff import operators as ops
from skydiff.errors import InputError, ShapeError

BOUNDARIES = ["extrapolate", "periodic", "zero", "neumann"]


def grid(h: int, w: int, dx: float = 1.0, dy: float = 1.0, dtype=torch.float64):
    """Coordinates x (columns) and y (rows, downward) of an H x W grid."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=dtype) * dy, torch.arange(w, dtype=dtype) * dx, indexing="ij"
    )
    return x, y


# ----------------------------------------------------------------------------------------------------------------
# analytic fields
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", [1.0, 0.5, (0.7, 1.3)])
def test_polynomials_exact_with_extrapolate(spacing):
    dx, dy = (spacing, spacing) if isinstance(spacing, float) else spacing
    x, y = grid(9, 11, dx, dy)
    # linear
    f = 2.0 + 3.0 * x - 5.0 * y
    g = ops.gradient(f, spacing)
    torch.testing.assert_close(g[0], torch.full_like(f, 3.0), atol=1e-10, rtol=0)
    torch.testing.assert_close(g[1], torch.full_like(f, -5.0), atol=1e-10, rtol=0)
    # quadratic, all pixels including edges and corners
    f = 1.0 + x - 2 * y + 0.5 * x**2 - 0.3 * x * y + 0.8 * y**2
    g = ops.gradient(f, spacing)
    torch.testing.assert_close(g[0], 1.0 + x - 0.3 * y, atol=1e-10, rtol=0)
    torch.testing.assert_close(g[1], -2.0 - 0.3 * x + 1.6 * y, atol=1e-10, rtol=0)
    lap = ops.laplacian(f, spacing)
    torch.testing.assert_close(lap, torch.full_like(f, 1.0 + 1.6), atol=1e-9, rtol=0)
    # vector field of quadratics
    w = torch.stack((x**2 + x * y, y**2 - 3 * x))
    torch.testing.assert_close(ops.divergence(w, spacing), 2 * x + y + 2 * y, atol=1e-10, rtol=0)
    torch.testing.assert_close(ops.curl(w, spacing), -3.0 - x, atol=1e-10, rtol=0)


def test_matches_numpy_gradient_edge_order_2():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((13, 17))
    g = ops.gradient(f, (0.5, 2.0))
    gy, gx = np.gradient(f, 2.0, 0.5, edge_order=2)
    np.testing.assert_allclose(g[0], gx, atol=1e-12)
    np.testing.assert_allclose(g[1], gy, atol=1e-12)


def _sin_errors(n: int) -> tuple[float, float, float]:
    """Max interior errors of gradient (x, y) and Laplacian for a smooth non-periodic field on [0, 1]^2."""
    h = 1.0 / (n - 1)
    x, y = grid(n, n, h, h)
    f = torch.sin(2 * x + 0.3) * torch.cos(3 * y)
    g = ops.gradient(f, h)
    lap = ops.laplacian(f, h)
    inner = (slice(1, -1), slice(1, -1))
    ex = (g[0] - 2 * torch.cos(2 * x + 0.3) * torch.cos(3 * y))[inner].abs().max().item()
    ey = (g[1] + 3 * torch.sin(2 * x + 0.3) * torch.sin(3 * y))[inner].abs().max().item()
    el = (lap + 13 * f)[inner].abs().max().item()
    return ex, ey, el


def test_second_order_convergence_inside():
    coarse = _sin_errors(33)
    fine = _sin_errors(65)
    for e1, e2 in zip(coarse, fine):
        assert 3.5 < e1 / e2 < 4.5, (coarse, fine)


def test_edge_extrapolate_is_second_order_for_gradient():
    errs = []
    for n in (33, 65):
        h = 1.0 / (n - 1)
        x, y = grid(n, n, h, h)
        g = ops.gradient(torch.sin(2 * x + 0.3) * torch.cos(3 * y), h)
        errs.append((g[0] - 2 * torch.cos(2 * x + 0.3) * torch.cos(3 * y)).abs().max().item())
    assert errs[0] / errs[1] > 3.5


def test_periodic_boundary_on_periodic_field():
    h_, w_ = 48, 64
    x, y = grid(h_, w_)
    kx, ky = 2 * math.pi * 3 / w_, 2 * math.pi * 2 / h_
    f = torch.sin(kx * x) * torch.cos(ky * y)
    g = ops.gradient(f, boundary="periodic")
    # the centred difference of sin(kx) is sin(kh)/h * cos(kx): exact up to that known factor
    torch.testing.assert_close(g[0], math.sin(kx) * torch.cos(kx * x) * torch.cos(ky * y), atol=1e-12, rtol=0)
    torch.testing.assert_close(g[1], -math.sin(ky) * torch.sin(kx * x) * torch.sin(ky * y), atol=1e-12, rtol=0)
    # and close to the analytic derivative everywhere, edges included
    assert (g[0] - kx * torch.cos(kx * x) * torch.cos(ky * y)).abs().max() < 0.02 * kx
    lap = ops.laplacian(f, boundary="periodic")
    sym = (2 * math.cos(kx) - 2) + (2 * math.cos(ky) - 2)
    torch.testing.assert_close(lap, sym * f, atol=1e-12, rtol=0)
    # other boundaries are wrong at the edges of this field but periodic equals torch.roll
    roll = (torch.roll(f, -1, -1) - torch.roll(f, 1, -1)) / 2
    torch.testing.assert_close(g[0], roll, atol=1e-14, rtol=0)


def test_solid_body_rotation():
    x, y = grid(10, 12)
    x0, y0 = 5.5, 4.0
    w = torch.stack((-(y - y0), x - x0))
    # curl = dv/dx - du/dy = +2 everywhere (edges included with "extrapolate"), divergence 0
    torch.testing.assert_close(ops.curl(w), torch.full((10, 12), 2.0, dtype=w.dtype))
    torch.testing.assert_close(ops.divergence(w), torch.zeros(10, 12, dtype=w.dtype))
    # sign convention: right of the centre the flow goes down (increasing row), i.e. clockwise on screen
    assert w[1, 4, 11] > 0
    # the same rotation in physical coordinates (dx = dy = 2) with spacing=2 still has curl 2
    x2, y2 = grid(10, 12, 2.0, 2.0)
    w2 = torch.stack((-(y2 - 8.0), x2 - 11.0))
    torch.testing.assert_close(ops.curl(w2, 2.0), torch.full((10, 12), 2.0, dtype=w.dtype))


def test_divergence_of_position_and_laplacian_of_r2():
    x, y = grid(8, 9)
    w = torch.stack((x, y))
    torch.testing.assert_close(ops.divergence(w), torch.full((8, 9), 2.0, dtype=w.dtype))
    torch.testing.assert_close(ops.curl(w), torch.zeros(8, 9, dtype=w.dtype))
    lap = ops.laplacian(x**2 + y**2)
    torch.testing.assert_close(lap, torch.full((8, 9), 4.0, dtype=w.dtype))  # extrapolate: edges too
    for b in BOUNDARIES:
        lap = ops.laplacian(x**2 + y**2, boundary=b)
        torch.testing.assert_close(lap[1:-1, 1:-1], torch.full((6, 7), 4.0, dtype=w.dtype))


def test_zero_and_neumann_edges():
    f = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(3, 4)
    g = ops.gradient(f, boundary="zero")
    torch.testing.assert_close(g[0, :, 0], f[:, 1] / 2)
    torch.testing.assert_close(g[0, :, -1], -f[:, -2] / 2)
    torch.testing.assert_close(g[1, 0], f[1] / 2)
    lap = ops.laplacian(f, boundary="zero")
    assert lap[0, 0] == f[0, 1] + f[1, 0] - 4 * f[0, 0]
    gn = ops.gradient(f, boundary="neumann")
    torch.testing.assert_close(gn[0, :, 0], (f[:, 1] - f[:, 0]) / 2)
    # the Neumann Laplacian conserves mass
    rng = torch.Generator().manual_seed(1)
    r = torch.rand(7, 9, generator=rng, dtype=torch.float64)
    assert abs(ops.laplacian(r, boundary="neumann").sum().item()) < 1e-12


def test_norms():
    x, y = grid(6, 7)
    w = torch.stack((x**2, x * y))  # du/dx = 2x, du/dy = 0, dv/dx = y, dv/dy = x
    m = ops.gradient_norm(w, "none")
    torch.testing.assert_close(m, 4 * x**2 + y**2 + x**2)
    torch.testing.assert_close(ops.gradient_norm(w), m.sum())
    torch.testing.assert_close(ops.gradient_norm(w, "mean"), m.mean())
    d = ops.divergence_norm(w, "none")
    torch.testing.assert_close(d, (3 * x) ** 2)
    torch.testing.assert_close(ops.divergence_norm(w, reduction="sum"), d.sum())
    torch.testing.assert_close(ops.divergence_norm(w, "mean"), d.mean())
    # batch dims are kept by sum/mean
    wb = torch.stack((w, 2 * w, 3 * w)).reshape(3, 1, 2, 6, 7)
    s = ops.gradient_norm(wb)
    assert s.shape == (3, 1)
    torch.testing.assert_close(s[:, 0], m.sum() * torch.tensor([1.0, 4.0, 9.0], dtype=w.dtype))
    assert ops.divergence_norm(wb, "none").shape == (3, 1, 6, 7)
    # spacing enters as 1/dx^2
    torch.testing.assert_close(ops.gradient_norm(w, spacing=2.0), m.sum() / 4)
    # gradient_norm of a vector field equals the sum of the squared gradients of its components
    g = torch.stack((ops.gradient(w[0], boundary="periodic"), ops.gradient(w[1], boundary="periodic")))
    torch.testing.assert_close(ops.gradient_norm(w, "none", boundary="periodic"), g.square().sum(dim=(0, 1)))


# ----------------------------------------------------------------------------------------------------------------
# numpy / torch, batch dims, dtypes
# ----------------------------------------------------------------------------------------------------------------


def test_numpy_in_numpy_out():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((5, 6)).astype(np.float32)
    w = rng.standard_normal((2, 5, 6))
    g = ops.gradient(f)
    assert isinstance(g, np.ndarray) and g.shape == (2, 5, 6) and g.dtype == np.float32
    for fn, arg, shape in [
        (ops.divergence, w, (5, 6)),
        (ops.curl, w, (5, 6)),
        (ops.laplacian, f, (5, 6)),
        (ops.gradient_norm, w, ()),
        (ops.divergence_norm, w, ()),
    ]:
        out = fn(arg)
        assert isinstance(out, np.ndarray), fn.__name__
        assert out.shape == shape, fn.__name__
        assert out.dtype == arg.dtype, fn.__name__
    # same values as torch in
    np.testing.assert_allclose(ops.curl(w), ops.curl(torch.from_numpy(w)).numpy())
    # integers are promoted
    gi = ops.gradient(np.arange(20).reshape(4, 5))
    assert gi.dtype == np.float64
    np.testing.assert_allclose(gi[0], 1.0)
    np.testing.assert_allclose(gi[1], 5.0)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_batch_dims_and_float32(boundary):
    rng = torch.Generator().manual_seed(3)
    f = torch.rand(2, 3, 8, 9, generator=rng)
    w = torch.rand(4, 2, 8, 9, generator=rng)
    g = ops.gradient(f, boundary=boundary)
    assert g.shape == (2, 3, 2, 8, 9) and g.dtype == torch.float32
    torch.testing.assert_close(g[1, 2], ops.gradient(f[1, 2], boundary=boundary))
    lap = ops.laplacian(f, boundary=boundary)
    assert lap.shape == (2, 3, 8, 9) and lap.dtype == torch.float32
    torch.testing.assert_close(lap[0, 1], ops.laplacian(f[0, 1], boundary=boundary))
    for fn in (ops.divergence, ops.curl):
        out = fn(w, boundary=boundary)
        assert out.shape == (4, 8, 9) and out.dtype == torch.float32
        torch.testing.assert_close(out[3], fn(w[3], boundary=boundary))
    for fn in (ops.gradient_norm, ops.divergence_norm):
        out = fn(w, boundary=boundary)
        assert out.shape == (4,) and out.dtype == torch.float32
        torch.testing.assert_close(out[2], fn(w[2], boundary=boundary))
    assert ops.gradient(f.to(torch.float16), boundary=boundary).dtype == torch.float16


def test_torch_integer_tensor_promoted():
    g = ops.gradient(torch.arange(12).reshape(3, 4))
    assert g.dtype == torch.get_default_dtype()


# ----------------------------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_gradcheck(boundary):
    rng = torch.Generator().manual_seed(4)
    f = torch.rand(6, 7, generator=rng, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, 6, 7, generator=rng, dtype=torch.float64, requires_grad=True)
    sp = (0.8, 1.3)
    assert torch.autograd.gradcheck(lambda t: ops.gradient(t, sp, boundary), (f,))
    assert torch.autograd.gradcheck(lambda t: ops.laplacian(t, sp, boundary), (f,))
    assert torch.autograd.gradcheck(lambda t: ops.divergence(t, sp, boundary), (w,))
    assert torch.autograd.gradcheck(lambda t: ops.curl(t, sp, boundary), (w,))
    for red in ("sum", "mean", "none"):
        assert torch.autograd.gradcheck(lambda t: ops.gradient_norm(t, red, sp, boundary), (w,))
        assert torch.autograd.gradcheck(lambda t: ops.divergence_norm(t, red, sp, boundary), (w,))


def test_laplacian_neumann_is_symmetric():
    # the adjoint of the Neumann Laplacian is itself (checked through autograd's vector-Jacobian product)
    rng = torch.Generator().manual_seed(5)
    a = torch.rand(5, 6, generator=rng, dtype=torch.float64)
    b = torch.rand(5, 6, generator=rng, dtype=torch.float64)
    lhs = (ops.laplacian(a, boundary="neumann") * b).sum()
    rhs = (a * ops.laplacian(b, boundary="neumann")).sum()
    assert abs(lhs - rhs) < 1e-12


# ----------------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, shape",
    [
        (ops.gradient, (5,)),
        (ops.gradient, (2, 5)),
        (ops.laplacian, (5, 2)),
        (ops.divergence, (5, 6)),
        (ops.divergence, (3, 5, 6)),
        (ops.curl, (1, 5, 6)),
        (ops.gradient_norm, (2, 2, 6)),
        (ops.divergence_norm, (4, 3, 5, 6)),
    ],
)
def test_bad_shapes(fn, shape):
    with pytest.raises(ShapeError) as exc:
        fn(torch.zeros(shape))
    msg = str(exc.value)
    assert str(tuple(shape)) in msg
    assert "(..., H, W)" in msg or "(..., 2, H, W)" in msg


def test_bad_arguments():
    f = torch.zeros(4, 5)
    w = torch.zeros(2, 4, 5)
    with pytest.raises(InputError, match="boundary"):
        ops.gradient(f, boundary="reflect")
    with pytest.raises(InputError, match="reduction"):
        ops.gradient_norm(w, "max")
    with pytest.raises(InputError, match="spacing"):
        ops.laplacian(f, spacing=0.0)
    with pytest.raises(InputError, match="spacing"):
        ops.curl(w, spacing=(1.0, 2.0, 3.0))
    with pytest.raises(InputError, match="spacing"):
        ops.divergence(w, spacing=-1.0)
    with pytest.raises(InputError, match="spacing"):  # was read as (dx, dy) = (1, 2)
        ops.gradient(f, spacing="12")
    with pytest.raises(InputError, match="real"):
        ops.gradient(np.zeros((4, 5), dtype=complex))


def test_speed_radar_sized_field():
    # one thread: on a busy shared machine torch's intra-op pool stalls when a worker is descheduled
    f = torch.rand(765, 700)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ops.gradient(f)  # warm up
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            ops.gradient(f)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    dt = min(times)  # the best of a few runs, robust to a busy machine
    assert dt < 0.05, f"gradient of 765x700 float32 took {dt * 1e3:.1f} ms"
