"""skydiff.advect: pysteps semantics, exactness, gradients, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import skydiff
from skydiff import InputError, ShapeError
from skydiff._compat import import_pysteps

import_pysteps()
from pysteps.extrapolation.semilagrangian import extrapolate  # noqa: E402

BACKENDS = ["numba", "torch"]


def smooth_case(H=90, W=120):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    R = 2.0 + np.sin(xx / 9.0) * np.cos(yy / 11.0) + 0.3 * np.sin((xx + yy) / 17.0)
    V = np.stack([1.3 + 0.5 * np.sin(yy / 20.0), -0.7 + 0.4 * np.cos(xx / 25.0)])
    return R, V


def rel_max_err(a, b, border=8):
    if border:
        a = a[..., border:-border, border:-border]
        b = b[..., border:-border, border:-border]
    m = np.isfinite(a) & np.isfinite(b)
    return np.max(np.abs(a[m] - b[m])) / np.max(np.abs(b[m]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_iter", [0, 1, 2])
@pytest.mark.parametrize("steps", [12, [0.5, 1.0, 2.5, 4.0]])
def test_matches_pysteps_bilinear(backend, n_iter, steps):
    R, V = smooth_case()
    ref = extrapolate(R, V, steps, n_iter=n_iter)
    out = skydiff.advect(R, V, steps, n_iter=n_iter, backend=backend)
    assert out.shape == ref.shape
    # same pixels leave the domain, and the values agree to round-off (the target is 1e-3)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref))
    assert rel_max_err(out, ref, border=0) < 1e-10


def test_matches_pysteps_bicubic_on_smooth_field():
    R, V = smooth_case()
    ref = extrapolate(R, V, 6, interp_order=3)
    out = skydiff.advect(R, V, 6, interp="bicubic")
    # Catmull-Rom vs pysteps' cubic B-spline: both third order; pysteps' spline prefilter with mode="constant"
    # bends values within ~10 px of the edge, so compare away from it (measured: 2.6e-5 at 15 px)
    assert rel_max_err(out, ref, border=15) < 1e-4


def test_nan_in_field_propagates_like_pysteps():
    R, V = smooth_case()
    R[40:45, 50:60] = np.nan
    ref = extrapolate(R, V, 5, allow_nonfinite_values=True)
    out = skydiff.advect(R, V, 5)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert rel_max_err(out, ref, border=0) < 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_shift_is_exact(backend, dtype):
    rng = np.random.default_rng(1)
    R = rng.random((40, 50)).astype(dtype)
    V = np.zeros((2, 40, 50), dtype=dtype)
    V[0] = 2.0  # two columns right per step
    V[1] = -1.0  # one row up per step
    out = skydiff.advect(R, V, 3, backend=backend)
    assert out.dtype == dtype
    for t in range(1, 4):
        expect = np.full_like(R, np.nan)
        expect[: 40 - t, 2 * t :] = R[t:, : 50 - 2 * t]
        if backend == "torch":
            # grid_sample works in normalised coordinates: exact up to round-off of the coordinates
            atol = 1e-4 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(out[t - 1], expect, atol=atol, rtol=0, equal_nan=True)
        else:
            np.testing.assert_array_equal(out[t - 1], expect)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_velocity_is_identity(backend):
    R = np.random.default_rng(2).random((33, 47))
    out = skydiff.advect(R, np.zeros((2, 33, 47)), 4, backend=backend)
    for t in range(4):
        if backend == "numba":  # pixel coordinates: bit-exact
            np.testing.assert_array_equal(out[t], R)
        else:  # normalised coordinates: exact to round-off
            np.testing.assert_allclose(out[t], R, atol=1e-13, rtol=0)


def test_torch_shapes_batch_channels_nonsquare_dtype():
    F = torch.rand(3, 2, 17, 29, dtype=torch.float32)
    V = torch.randn(3, 2, 17, 29, dtype=torch.float32)
    out = skydiff.advect(F, V, 4)
    assert out.shape == (3, 4, 2, 17, 29) and out.dtype == torch.float32
    # a single velocity broadcasts over the batch
    out1 = skydiff.advect(F, V[0], 4)
    ref1 = skydiff.advect(F, V[:1].expand(3, -1, -1, -1), 4)
    torch.testing.assert_close(out1, ref1, equal_nan=True)
    # 2-D torch field
    assert skydiff.advect(F[0, 0], V[0], 2).shape == (2, 17, 29)


def test_backends_agree_on_random_fields():
    torch.manual_seed(3)
    F = torch.rand(2, 3, 25, 31, dtype=torch.float64)
    V = torch.randn(2, 2, 25, 31, dtype=torch.float64) * 1.5
    for n_iter in (0, 1, 3):
        a = skydiff.advect(F, V, [1, 2, 3.5, 6], n_iter=n_iter, backend="numba")
        b = skydiff.advect(F, V, [1, 2, 3.5, 6], n_iter=n_iter, backend="torch")
        torch.testing.assert_close(a, b, equal_nan=True, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backends_agree_on_the_no_data_footprint_at_whole_pixel_displacements(dtype):
    """At zero or whole-pixel displacements the torch backend's normalised coordinates land ~1e-16 off the pixel,
    and its NaN footprint (NaN sampled through grid_sample) grew by a pixel where the numba kernels' did not; now
    both mark an output NaN when a no-data pixel is among its 2 x 2 corners floor(x) .. floor(x) + 1."""
    R = np.random.default_rng(4).gamma(1.0, 1.0, (30, 40)).astype(dtype)
    R[10:13, 20:22] = np.nan
    R[0, 5] = R[29, 39] = np.nan  # at the edges
    for shift in (0.0, 1.0, -2.0, 0.3):
        V = np.full((2, 30, 40), shift, dtype)
        a = skydiff.advect(R, V, 3, backend="numba")
        b = skydiff.advect(R, V, 3, backend="torch")
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"shift {shift}")
        np.testing.assert_allclose(a, b, atol=1e-4 if dtype == np.float32 else 1e-12, rtol=0, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_departure_points_on_the_last_column_are_inside_on_both_backends(backend):
    """The torch backend tested 'outside' in normalised coordinates, where a point exactly on column W-1 came out
    at 1 + 1e-16: pixels that pysteps and the numba kernels sample were NaN."""
    for W, vx, dtype in ((6, 1.0, torch.float64), (11, -2.0, torch.float64), (8, -2.0, torch.float32)):
        R = torch.arange(1.0, W + 1, dtype=dtype)[None].repeat(5, 1)
        V = torch.zeros(2, 5, W, dtype=dtype)
        V[0] = vx
        out = skydiff.advect(R, V, 3, backend=backend)
        n_out = int(round(abs(vx) * 3))  # departure columns beyond the grid at lead 3
        assert int(torch.isnan(out[2, 0]).sum()) == n_out, (W, vx, dtype)


def test_float32_departure_points_just_outside_are_outside_on_both_backends():
    """The torch backend tested float32 positions against a grid-size tolerance, 8 eps max(H, W) px: departure
    points up to ~1e-3 px beyond the edge of a 1000-px grid were sampled (numba and pysteps: outside)."""
    H, W = 6, 1000
    for steps in (1, 12):
        for off in (3e-4, 9e-4, 2e-3):
            for col, vx in ((0, off), (W - 1, -off)):
                V = torch.zeros(2, H, W)
                V[0] = vx / steps
                got = {be: bool(torch.isnan(skydiff.advect(torch.ones(H, W), V, steps, backend=be)[-1, 2, col]))
                       for be in BACKENDS}
                assert got == {be: True for be in BACKENDS}, (steps, off, col, got)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outval_min_is_each_fields_own_minimum(backend):
    """A batch took the minimum of all its fields (a field of values ~100 was filled with ~5 from its neighbour)."""
    g = torch.Generator().manual_seed(0)
    F = torch.stack([torch.rand(10, 12, generator=g, dtype=torch.float64) + 5,
                     torch.rand(10, 12, generator=g, dtype=torch.float64) + 100])[:, None]
    V = torch.full((2, 2, 10, 12), 3.0, dtype=torch.float64)
    both = skydiff.advect(F, V, 2, outval="min", backend=backend)
    alone = torch.cat([skydiff.advect(F[i:i + 1], V[i:i + 1], 2, outval="min", backend=backend) for i in range(2)])
    assert torch.equal(both, alone)
    assert float(both[1, 0, 0, 0, 0]) == float(F[1].min())
    Fg = F[:, :, :6, :6].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: skydiff.advect(f, V[:, :, :6, :6] * 0.7, 2, outval="min",
                                                             backend=backend), (Fg,))


def test_outval_options():
    R, V = smooth_case(30, 40)
    out0 = skydiff.advect(R, V, 3, outval=0.0)
    assert np.isfinite(out0).all()
    outm = skydiff.advect(R, V, 3, outval="min")
    nan_mask = np.isnan(skydiff.advect(R, V, 3))
    np.testing.assert_allclose(outm[nan_mask], R.min())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_iter", [0, 1, 2])
def test_gradcheck_bilinear(backend, n_iter):
    torch.manual_seed(4)
    F = torch.rand(2, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    V = (torch.randn(2, 2, 7, 9, dtype=torch.float64) * 0.8).requires_grad_()

    def f(F, V):
        return skydiff.advect(F, V, [1, 2, 3.5], n_iter=n_iter, backend=backend, outval=0.0)

    assert gradcheck(f, (F, V), eps=1e-6, atol=1e-6)


def test_gradcheck_bicubic():
    torch.manual_seed(5)
    F = torch.rand(1, 1, 8, 7, dtype=torch.float64, requires_grad=True)
    V = (torch.randn(1, 2, 8, 7, dtype=torch.float64) * 0.8).requires_grad_()
    assert gradcheck(lambda F, V: skydiff.advect(F, V, 3, interp="bicubic", outval=0.0), (F, V), eps=1e-6, atol=1e-6)


def test_gradient_only_wrt_velocity_and_only_field():
    torch.manual_seed(6)
    F = torch.rand(1, 1, 12, 14, dtype=torch.float64)
    V = torch.randn(1, 2, 12, 14, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda V: skydiff.advect(F, V, 2, outval=0.0), (V,), eps=1e-6, atol=1e-6)
    F2 = F.clone().requires_grad_()
    assert gradcheck(lambda F: skydiff.advect(F, V.detach(), 2, outval=0.0), (F2,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "field, velocity, kwargs, err, match",
    [
        (np.zeros((10, 12)), np.zeros((3, 10, 12)), {}, ShapeError, r"velocity must be \(2, H, W\)"),
        (np.zeros((10, 12)), np.zeros((2, 10, 11)), {}, ShapeError, "does not match the field grid"),
        (np.zeros((2, 10, 12)), np.zeros((2, 10, 12)), {}, ShapeError, "numpy field must be 2-D"),
        (np.zeros((1, 12)), np.zeros((2, 1, 12)), {}, ShapeError, "at least 2 x 2"),
        (np.zeros((10, 12)), np.full((2, 10, 12), np.nan), {}, InputError, "velocity contains NaN"),
        (np.zeros((10, 12)), np.zeros((2, 10, 12)), {"steps": 0}, InputError, "steps must be >= 1"),
        (np.zeros((10, 12)), np.zeros((2, 10, 12)), {"steps": [2, 1]}, InputError, "strictly increasing"),
        (np.zeros((10, 12)), np.zeros((2, 10, 12)), {"interp": "spline"}, InputError, "interp must be one of"),
        (np.zeros((10, 12)), np.zeros((2, 10, 12)), {"n_iter": -1}, InputError, "n_iter must be"),
        (np.zeros((10, 12)), np.zeros((2, 10, 12)), {"outval": "max"}, InputError, "outval must be"),
        (np.zeros((10, 12)), np.zeros((2, 10, 12)), {"outval": None}, InputError, "outval must be"),
        (np.zeros((10, 12)), np.zeros((2, 10, 12)), {"steps": "12"}, InputError, "steps must be"),
        (np.full((10, 12), "a"), np.zeros((2, 10, 12)), {}, InputError, "real numeric"),
        (torch.zeros(10, 12), torch.zeros(2, 10, 12, dtype=torch.complex64), {}, InputError, "velocity must be a real"),
        (torch.zeros(0, 1, 10, 12), torch.zeros(0, 2, 10, 12), {"interp": "bicubic"}, ShapeError, "empty batch"),
    ],
)
def test_bad_input(field, velocity, kwargs, err, match):
    kwargs = dict(kwargs)
    steps = kwargs.pop("steps", 2)
    with pytest.raises(err, match=match):
        skydiff.advect(field, velocity, steps, **kwargs)


def test_errors_are_skydiff_errors_and_value_errors():
    with pytest.raises(ValueError):
        skydiff.advect(np.zeros((4, 4)), np.zeros((4, 4)), 1)
    with pytest.raises(skydiff.SkydiffError):
        skydiff.advect(np.zeros((4, 4)), np.zeros((4, 4)), 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outval_edge_matches_pysteps_nearest_mode(backend):
    R, V = smooth_case(40, 50)
    ref = extrapolate(R, V, 4, map_coordinates_mode="nearest")
    out = skydiff.advect(R, V, 4, outval="edge", backend=backend)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_edge_mode(backend):
    torch.manual_seed(7)
    F = torch.rand(1, 2, 7, 8, dtype=torch.float64, requires_grad=True)
    V = (torch.randn(1, 2, 7, 8, dtype=torch.float64) * 1.2).requires_grad_()
    assert gradcheck(lambda F, V: skydiff.advect(F, V, [1, 2.5], outval="edge", backend=backend), (F, V), eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ advect_trajectory


def _traj_inputs(seed=0, H=9, W=11, K=4):
    g = torch.Generator().manual_seed(seed)
    X0 = torch.randn(3, H, W, dtype=torch.float64, generator=g) * 0.6
    eta = torch.randn(K - 1, 2, H, W, dtype=torch.float64, generator=g) * 0.1
    return X0, eta, [0.7, 0.5, 1.0, 0.3][:K]


def test_trajectory_matches_chained_advect_and_torch_backend():
    from skydiff.advection import advect_trajectory

    X0, eta, dts = _traj_inputs()
    fused = advect_trajectory(X0, dts, eta)
    assert fused.shape == (len(dts) + 1, 3, 9, 11)
    # the definition: one advect step of the state along its own velocity, model error added to the velocity
    X = X0[None]
    for k, dt in enumerate(dts):
        X = skydiff.advect(X, X[:, 1:], [dt], outval="edge")[:, 0]
        if k < len(dts) - 1:
            X = torch.cat([X[:, :1], X[:, 1:] + eta[k][None]], dim=1)
        assert torch.allclose(fused[k + 1], X[0], atol=1e-12)
    torch_path = advect_trajectory(X0, dts, eta, backend="torch")
    assert torch.allclose(fused, torch_path, atol=1e-12)
    assert torch.equal(advect_trajectory(X0, [])[0], X0)


def test_trajectory_gradcheck():
    from skydiff.advection import advect_trajectory

    X0, eta, dts = _traj_inputs(1, H=7, W=8, K=3)
    X0.requires_grad_(True)
    eta.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, e: advect_trajectory(x, dts, e), (X0, eta))
    assert torch.autograd.gradcheck(lambda x: advect_trajectory(x, dts), (X0,))
    assert torch.autograd.gradcheck(lambda x, e: advect_trajectory(x, dts, e, backend="torch"), (X0, eta))


def test_trajectory_bad_input():
    from skydiff.advection import advect_trajectory

    X0, eta, dts = _traj_inputs()
    with pytest.raises(ShapeError, match="velocity last"):
        advect_trajectory(X0[0], dts)
    with pytest.raises(ShapeError, match="model_error"):
        advect_trajectory(X0, dts, eta[:1])
    with pytest.raises(InputError, match="backend"):
        advect_trajectory(X0, dts, backend="jax")
    # the default (numba) path checked nothing more: a 1-pixel row read out of bounds (values ~1e19)
    with pytest.raises(ShapeError, match="at least 2 x 2"):
        advect_trajectory(torch.rand(3, 1, 6, dtype=torch.float64), [1.0])
    for bad in ([float("nan")], [-1.0], [0.0]):
        with pytest.raises(InputError, match="dts"):
            advect_trajectory(X0, bad)
    nan_v = X0.clone()
    nan_v[-1, 0, 0] = float("nan")
    with pytest.raises(InputError, match="finite"):
        advect_trajectory(nan_v, dts)
    with pytest.raises(InputError, match="torch tensor"):
        advect_trajectory(X0.numpy(), dts)


def test_half_precision_fields_are_advected_in_float32():
    # the numba kernel has no float16: half-precision input is computed in float32 and returned in its dtype
    rng = np.random.default_rng(0)
    f = rng.random((16, 16))
    v = np.stack([np.full((16, 16), 1.5), np.full((16, 16), -0.5)])
    ref = skydiff.advect(f.astype(np.float32), v, 2)
    out = skydiff.advect(f.astype(np.float16), v, 2)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), ref, atol=2e-3, equal_nan=True)
    outb = skydiff.advect(torch.from_numpy(f).to(torch.bfloat16), torch.from_numpy(v), 2)
    assert outb.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_torch_backend_keeps_pixel_positions(dtype):
    # the torch backend (every CUDA tensor takes it) used to build its sampling grid in the field's dtype: on a
    # 600-px row bfloat16 positions are ~1 px off. Computed in float32, only the field's own rounding remains
    x = np.arange(600.0)
    f = torch.from_numpy(np.tile(1.0 + np.sin(2 * np.pi * x / 20.0), (8, 1)))
    v = torch.zeros(2, 8, 600, dtype=torch.float64)
    v[0] = 0.7
    ref = skydiff.advect(f.float(), v.float(), 3, backend="torch")
    out = skydiff.advect(f.to(dtype), v.to(dtype), 3, backend="torch")
    assert out.dtype == dtype
    ok = torch.isfinite(ref)
    assert torch.equal(ok, torch.isfinite(out))
    assert (out.float() - ref)[ok].abs().max() < 0.02


_KERNEL_RUN = """
import sys, numpy as np, torch
from skydiff.advection import advect, advect_trajectory
torch.manual_seed(0)
X0 = torch.randn(3, 40, 50, dtype=torch.float64); X0[1:] *= 3
x = X0.clone().requires_grad_(True)
tr = advect_trajectory(x, [0.4] * 5)
(g,) = torch.autograd.grad(tr, x, torch.ones_like(tr))
e = advect(torch.rand(1, 1, 40, 50), torch.randn(1, 2, 40, 50) * 3, [1, 2, 3])
np.savez(sys.argv[1], tr=tr.detach().numpy(), g=g.numpy(), e=e.numpy())
"""


def test_numba_kernels_give_the_same_bits_freshly_compiled_and_from_the_cache(tmp_path):
    """The first process after an install compiles the kernels, later ones load numba's cache: both must agree to
    the bit (with fast-math 'contract' they did not — FMA contraction differed — and 4D-Var's L-BFGS then took
    another path: 0.14 px of motion on a KNMI case)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    outs = []
    for k in range(2):  # 1: compiles and writes the cache; 2: loads it
        out = tmp_path / f"run{k}.npz"
        subprocess.run([sys.executable, "-c", _KERNEL_RUN, str(out)], env=env, check=True, timeout=600)
        outs.append(np.load(out))
    assert any((tmp_path / "cache").rglob("*.nbc")), "numba wrote no cache: the test did not compare cached code"
    for name in ("tr", "g", "e"):
        assert np.array_equal(outs[0][name], outs[1][name], equal_nan=True), name


def test_a_badly_shaped_list_velocity_gets_a_shape_error():
    from skydiff.errors import ShapeError

    with pytest.raises(ShapeError, match=r"got shape \(2, 2\)"):
        skydiff.advect(np.ones((16, 20)), [[1, 2], [3, 4]], 2)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_velocity_gradient_stays_finite_where_a_masked_loss_drops_no_data(backend):
    """A NaN pixel in the field made 16 velocity-gradient entries NaN although the loss masked the NaN outputs
    (0 * NaN in the stencil differences); the forward NaN footprint must not change."""
    torch.manual_seed(0)
    F = torch.rand(1, 1, 9, 11, dtype=torch.float64)
    F[0, 0, 4, 5] = float("nan")
    V = (0.5 * torch.randn(1, 2, 9, 11, dtype=torch.float64)).requires_grad_(True)
    out = skydiff.advect(F, V, 2, outval=0.0, backend=backend)
    assert bool(torch.isnan(out).any()) and int(torch.isnan(out).sum()) <= 8  # the hole's stencils only
    torch.where(torch.isfinite(out), out, torch.zeros_like(out)).sum().backward()
    assert bool(torch.isfinite(V.grad).all()) and float(V.grad.abs().max()) > 0
    # away from the hole the gradient is that of the field without it (the hole's neighbours aside)
    G = F.clone()
    G[0, 0, 4, 5] = 0.0
    W = V.detach().clone().requires_grad_(True)
    o2 = skydiff.advect(G, W, 2, outval=0.0, backend=backend)
    fin = torch.isfinite(out)
    torch.testing.assert_close(out[fin], o2[fin].detach())  # outputs away from the hole as without it
    torch.where(fin, o2, torch.zeros_like(o2)).sum().backward()
    torch.testing.assert_close(V.grad, W.grad)


def test_masked_and_complex_fields():
    """A numpy mask was dropped (the masked values advected as data); complex input lost its imaginary part."""
    field = np.ma.masked_less(np.arange(320.0).reshape(16, 20), 5)
    out = skydiff.advect(field, np.zeros((2, 16, 20)), 1)
    assert np.isnan(np.asarray(out)[..., 0, :5]).all() and np.isfinite(np.asarray(out)[..., 1:, :]).all()
    with pytest.raises(InputError, match="real"):
        skydiff.advect(np.ones((16, 20), complex), np.zeros((2, 16, 20)), 1)
    with pytest.raises(InputError, match="real"):
        skydiff.advect(torch.ones(16, 20, dtype=torch.complex64), torch.zeros(2, 16, 20), 1)
