"""Tests of skydiff.motion.fourdvar: cost gradient, synthetic accuracy, weak vs strong constraint, registry, errors.

Small grids (12-64 px) and few iterations: the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import skydiff
import skydiff.motion as motion
from skydiff.errors import InputError, ShapeError, SkydiffWarning
from skydiff.motion import FourDVarResult, fourdvar, fourdvar_reference

FV = importlib.import_module("skydiff.motion.fourdvar")  # the module (skydiff.motion.fourdvar is the function)


def _texture(n: int, seed: int = 0, sigma: float = 3.0, std: float = 5.0) -> np.ndarray:
    """Smooth random tracer with contrast everywhere (in dB-like units)."""
    rng = np.random.default_rng(seed)
    z = ndi.gaussian_filter(rng.standard_normal((n, n)), sigma, mode="wrap")
    return std * z / z.std()


def _interior(n: int, margin: int) -> np.ndarray:
    m = np.zeros((n, n), bool)
    m[margin:-margin, margin:-margin] = True
    return m


def _epe(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.hypot(a[0] - b[0], a[1] - b[1])[mask].mean())


def _rain(n: int = 48, seed: int = 3) -> np.ndarray:
    """Intermittent synthetic rain (mm/h) translated by (u, v) = (1.2, -0.6) px per step, 4 frames."""
    z = _texture(n, seed, sigma=4.0, std=1.0)
    base = np.clip(np.where(z > -0.2, np.exp(1.5 * (z + 0.2)) - 0.8, 0.0), 0.0, None)
    v = np.stack([np.full((n, n), 1.2), np.full((n, n), -0.6)])
    fr = np.concatenate([base[None], skydiff.advect(base, v, 3, outval=0.0)])
    return np.clip(fr, 0.0, None)


# --------------------------------------------------------------------------------------------------------------
# cost function: exact gradient, same cost as the plain reference
# --------------------------------------------------------------------------------------------------------------


def _tiny_cost(step=FV._skydiff_step, n: int = 10, n_sub: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T = 3
    obs = torch.randn(T, n, n, dtype=torch.float64, generator=g)
    wts = torch.rand(T, n, n, dtype=torch.float64, generator=g)
    dts, after = FV._schedule(np.array([0.0, 0.8, 2.0]), n_sub)  # irregular times
    cost = FV._Cost(
        obs, wts, dts, after, alpha=3.0, beta=1.0, sigma=1.3, q_alpha=2.0, q_beta=1.0, q_gamma=0.5, step=step
    )
    w0 = (0.8 * torch.randn(2, n, n, dtype=torch.float64, generator=g)).requires_grad_()
    I0 = torch.randn(n, n, dtype=torch.float64, generator=g).requires_grad_()
    eta = (0.1 * torch.randn(cost.n_model_errors, 2, n, n, dtype=torch.float64, generator=g)).requires_grad_()
    return cost, w0, I0, eta


@pytest.mark.parametrize("constraint", ["strong", "weak"])
def test_cost_gradient_matches_finite_differences(constraint):
    cost, w0, I0, eta = _tiny_cost()
    if constraint == "strong":
        assert torch.autograd.gradcheck(lambda w, i: cost(w, i), (w0, I0), eps=1e-6, atol=1e-6)
    else:
        assert torch.autograd.gradcheck(lambda w, i, e: cost(w, i, e), (w0, I0, eta), eps=1e-6, atol=1e-6)


def test_reference_model_and_cost_match_skydiff():
    """The plain gather-based model step is the same scheme as skydiff.advect(..., outval='edge')."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1, 3, 14, 11, dtype=torch.float64, generator=g)
    X[:, 1:] *= 3.0  # departure points outside the grid too
    for dt in (0.2, 0.7):
        a = FV._skydiff_step(X, dt)
        b = FV._reference_step(X, dt)
        assert torch.allclose(a, b, atol=1e-12)
    c1, w0, I0, eta = _tiny_cost()
    c2 = _tiny_cost(step=FV._reference_step)[0]
    assert torch.allclose(c1(w0, I0, eta), c2(w0, I0, eta), rtol=1e-12)
    # and the reference's gradient is exact too (autograd through gather)
    assert torch.autograd.gradcheck(lambda w, i: c2(w, i), (w0, I0), eps=1e-6, atol=1e-6)


def test_reference_defaults_are_the_same_cost():
    """fourdvar_reference claims fourdvar's cost: every shared weight has the same default (at full resolution,
    level 0, fourdvar's q_gamma is used as given; the reference's was still the old per-level 1.0)."""
    import inspect

    a = inspect.signature(fourdvar).parameters
    b = inspect.signature(fourdvar_reference).parameters
    shared = [k for k in b if k in a and k != "frames"]
    assert {"q_gamma", "alpha", "beta", "q_alpha", "q_beta", "dry_weight", "sigma"} <= set(shared)
    assert {k: b[k].default for k in shared} == {k: a[k].default for k in shared}


def test_schedule_irregular_times():
    dts, after = FV._schedule(FV._times_tau([0, 4, 10, 15], 4), 5)  # minutes; mean interval 5 min
    assert after == [4, 10, 15]  # 0.8 -> 4 steps, 1.2 -> 6 steps, 1.0 -> 5 steps
    assert np.isclose(sum(dts), 3.0)
    tau = FV._times_tau(np.array(["2010-08-26T00:00", "2010-08-26T00:10", "2010-08-26T00:15"], "datetime64[m]"), 3)
    assert np.allclose(tau, [0.0, 4 / 3, 2.0])


# --------------------------------------------------------------------------------------------------------------
# accuracy on synthetic flows
# --------------------------------------------------------------------------------------------------------------


def test_rotating_divergent_flow_is_recovered():
    """Smooth tracer advected by translation + rotation + divergence: mean EPE < 0.2 px/step inside."""
    n = 64
    z = _texture(n, seed=0)
    y, x = np.mgrid[0:n, 0:n].astype(float)
    c = (n - 1) / 2
    u = 1.0 - 0.02 * (y - c) + 0.01 * (x - c)  # rotation 0.02 rad/step, divergence 0.02 /step
    v = -0.5 + 0.02 * (x - c) + 0.01 * (y - c)
    truth = np.stack([u, v])
    frames = np.concatenate([z[None], skydiff.advect(z, truth, 3)])  # NaN where trajectories leave the grid
    assert np.isnan(frames).any()
    res = fourdvar(frames, transform=None)
    assert isinstance(res, FourDVarResult)
    assert res.converged, res.status
    m = _interior(n, 8)
    assert _epe(res.velocity, truth, m) < 0.2  # measured 0.07
    assert _epe(res.trajectory_w[0], truth, m) < 0.2
    # the velocity magnitude is recovered, not just its direction
    speed = np.hypot(*truth)[m].mean()
    assert abs(np.hypot(*res.velocity)[m].mean() - speed) < 0.1 * speed
    # result layout
    assert res.velocity.shape == (2, n, n) and res.velocity.dtype == np.float64
    assert res.trajectory_w.shape == (4, 2, n, n) and res.trajectory_I.shape == (4, n, n)
    assert np.allclose(res.times, [0, 1, 2, 3])
    assert res.cost_history[-1] <= res.cost_history[0]
    assert res.levels[-1].shape == (n, n) and len(res.levels) == 3  # 16, 32, 64
    assert res.n_iter == sum(lv.n_iter for lv in res.levels) > 0
    assert set(res.cost_terms) == {"obs", "background", "model"} and res.cost_terms["model"] == 0.0


def test_weak_constraint_tracks_a_motion_that_changes_in_time():
    """Uniform velocity rotating by 30 deg per frame: the weak constraint recovers the last one, strong cannot."""
    n = 48
    z = _texture(n, seed=1)
    speed = 1.5
    vels = [np.stack([np.full((n, n), speed * np.cos(t)), np.full((n, n), speed * np.sin(t))]) for t in
            np.deg2rad([0.0, 30.0, 60.0])]  # fmt: skip
    frames = [z]
    for vk in vels:
        frames.append(skydiff.advect(frames[-1], vk, 1)[0])
    frames = np.stack(frames)
    m = _interior(n, 10)
    strong = fourdvar(frames, transform=None, constraint="strong", levels=2)
    weak = fourdvar(frames, transform=None, constraint="weak", levels=2)
    e_strong = _epe(strong.velocity, vels[-1], m)
    e_weak = _epe(weak.velocity, vels[-1], m)
    # measured: strong 0.80 px (a constant motion cannot turn), weak 0.2 px
    assert e_weak < 0.35
    assert e_weak < 0.5 * e_strong
    assert weak.cost_terms["model"] > 0.0
    # the weak trajectory turns: w at the last time points closer to the last true direction than w_0
    ang = lambda w: np.degrees(np.arctan2(w[1][m].mean(), w[0][m].mean()))  # noqa: E731
    assert ang(weak.trajectory_w[-1]) > ang(weak.trajectory_w[0]) + 15.0


def test_rain_in_mm_per_hour_with_db_transform_and_nan():
    frames = _rain()
    frames[:, :6, :] = np.nan  # a no-data band (masked in the cost)
    res = fourdvar(frames, levels=2)
    assert np.isfinite(res.velocity).all()
    m = _interior(frames.shape[-1], 10)
    m[:12] = False
    err = np.hypot(res.velocity[0] - 1.2, res.velocity[1] + 0.6)[m].mean()
    assert err < 0.3  # measured 0.1


def test_rain_entering_from_a_no_data_area_is_left_out_of_the_cost():
    """A no-data band upstream (and a wider one in the first frame): the model can only bring dry values out of it
    while the radar sees rain there later. Like the grid border, such pixels are now left out (the inflow tracer
    starts at 0 where the first frame has no data); they bent the motion (mean error 0.49 / 0.55 px on these two
    cases before, 0.33 / 0.29 now)."""
    from skydiff.synthetic import rain_sequence

    for seed in (5, 6):
        da, v = rain_sequence(4, (160, 160), seed=seed, return_motion=True)
        R = da.values.astype(np.float64)
        R[:, :, :40] = np.nan
        R[0, :, 40:60] = np.nan
        res = fourdvar(R)
        ok = np.isfinite(R[-1]) & (R[-1] > 0.1)
        assert np.abs(np.asarray(res.velocity) - v)[:, ok].mean() < 0.4, seed


def test_irregular_times_give_velocity_per_mean_interval():
    """Frames at 0, 4, 10, 15 min of a motion of 0.3 px/min: 1.5 px per mean (5-min) interval."""
    n = 48
    z = _texture(n, seed=4)
    minutes = np.array([0.0, 4.0, 10.0, 15.0])
    vmin = np.stack([np.full((n, n), 0.3), np.full((n, n), 0.0)])  # px per minute
    frames = np.concatenate([z[None], skydiff.advect(z, vmin, list(minutes[1:]))])
    res = fourdvar(frames, times=minutes, transform=None, levels=2)
    m = _interior(n, 8)
    assert np.allclose(res.times, minutes / 5.0)
    assert abs(res.velocity[0][m].mean() - 1.5) < 0.1
    assert abs(res.velocity[1][m].mean()) < 0.1


def test_multiscale_and_finest_level_options():
    frames = _rain()
    fast = fourdvar(frames, levels=2, finest_level=1)
    assert fast.levels[-1].n_iter == 0 and "not optimised" in fast.levels[-1].status
    assert fast.converged and np.isfinite(fast.velocity).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkydiffWarning)  # 40 iterations may not be enough without multiscale
        single = fourdvar(frames, levels=1, max_iter=40)
    assert len(single.levels) == 1
    first = fourdvar(frames, levels=2, velocity_at="first", optimize_init=False, mask_inflow=False)
    assert np.allclose(first.velocity, first.trajectory_w[0])


def test_reference_implementation_runs_and_lowers_the_cost():
    frames = _rain(24)
    ref = fourdvar_reference(frames, max_iter=5)
    assert ref.velocity.shape == (2, 24, 24)
    assert ref.cost_history[-1] < ref.cost_history[0]
    assert len(ref.eval_times) == ref.n_eval == len(ref.eval_costs)


# --------------------------------------------------------------------------------------------------------------
# registry, types, devices
# --------------------------------------------------------------------------------------------------------------


def test_registered_in_the_motion_registry():
    assert "4dvar" in motion.methods()
    assert motion.get_method("FourDVar").name == "4dvar"
    rec = motion.get_method("4dvar")
    assert rec.backend == "torch" and rec.min_frames == 2 and rec.max_frames is None


def test_estimate_numpy_and_torch():
    frames = _rain(32)
    v_np = motion.estimate(frames, method="4dvar", levels=2)
    assert isinstance(v_np, np.ndarray) and v_np.shape == (2, 32, 32) and v_np.dtype == np.float64
    t = torch.from_numpy(frames)
    v_t = motion.estimate(t, method="4dvar", levels=2)
    assert isinstance(v_t, torch.Tensor) and v_t.shape == (2, 32, 32) and v_t.dtype == torch.float64
    assert np.allclose(v_t.numpy(), v_np, atol=1e-6)
    # float32 input: computed in float64 on the CPU, returned as float32; the rounding of the input changes the
    # L-BFGS path a little, not the answer
    v32 = motion.estimate(t.float(), method="4dvar", levels=2)
    assert v32.dtype == torch.float32
    m = _interior(32, 6) & (frames[-1] > 0.1)
    truth = np.stack([np.full((32, 32), 1.2), np.full((32, 32), -0.6)])
    assert _epe(v_np, truth, m) < 0.3 and _epe(v32.numpy(), truth, m) < 0.3
    # the direct call with torch input gives tensors as well, the same as estimate() (NaN-free input)
    res = fourdvar(t, levels=2)
    assert isinstance(res.velocity, torch.Tensor) and isinstance(res.trajectory_I, torch.Tensor)
    assert np.allclose(res.velocity.numpy(), v_np, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_follows_input():
    frames = torch.from_numpy(_rain(32)).float().cuda()
    res = fourdvar(frames, levels=2, max_iter=50)
    assert res.velocity.device.type == "cuda"
    cpu = fourdvar(frames.cpu(), levels=2, max_iter=50)
    assert torch.allclose(res.velocity.cpu(), cpu.velocity, atol=0.05)


# --------------------------------------------------------------------------------------------------------------
# errors, warnings
# --------------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    frames = _rain(16)
    with pytest.raises(InputError, match="at least 2 frames"):
        fourdvar(frames[:1])
    with pytest.raises(ShapeError, match="single 2-D field"):
        fourdvar(frames[0])
    with pytest.raises(ShapeError, match=r"\(T, H, W\)"):
        fourdvar(frames[None])
    bad = frames.copy()
    bad[2] = np.nan
    with pytest.raises(InputError, match=r"frames \[2\] are entirely NaN"):
        fourdvar(bad)
    with pytest.raises(InputError, match="strictly increasing"):
        fourdvar(frames, times=[0, 5, 5, 10])
    with pytest.raises(InputError, match="strictly increasing"):
        fourdvar(frames, times=[0, 10, 5, 15])
    with pytest.raises(ShapeError, match="one time per frame"):
        fourdvar(frames, times=[0, 5, 10])
    with pytest.raises(InputError, match="negative rain"):
        fourdvar(frames - 5.0)
    with pytest.raises(InputError, match="constraint"):
        fourdvar(frames, constraint="medium")
    with pytest.raises(InputError, match="alpha"):
        fourdvar(frames, alpha=-1.0)
    with pytest.raises(ShapeError, match="init_velocity"):
        fourdvar(frames, init_velocity=np.zeros((2, 8, 8)))
    with pytest.raises(InputError, match="at least 2 frames"):
        motion.estimate(frames[:1], method="4dvar")
    with pytest.raises(InputError, match="entirely NaN"):
        motion.estimate(bad, method="4dvar")


def test_non_convergence_warns_and_returns_the_result():
    frames = _rain(32)
    with pytest.warns(SkydiffWarning, match="did not converge"):
        res = fourdvar(frames, levels=1, max_iter=2, ftol=0.0, gtol=0.0, mask_inflow=False)
    assert res.converged is False
    assert "max_iter=2" in res.status
    assert np.isfinite(res.velocity).all() and res.n_iter == 2
    assert res.cost_history[-1] < res.cost_history[0]
    with pytest.warns(SkydiffWarning, match="did not converge"):
        motion.estimate(frames, method="4dvar", levels=1, max_iter=2, ftol=0.0, gtol=0.0)


def test_dry_frames_give_zero_motion_with_a_warning():
    frames = np.zeros((3, 16, 16))
    with pytest.warns(SkydiffWarning, match="no rain"):
        res = fourdvar(frames)
    assert np.all(res.velocity == 0) and res.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SkydiffWarning):
            motion.estimate(frames, method="4dvar")


def test_cost_terms_divergence_and_sigma_scaling():
    """_div_sq took dv from the u channel and sigma could enter linearly without any test noticing (mutation audit)."""
    from skydiff.motion.fourdvar import _Cost, _div_sq

    H, W = 9, 11
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rotation = torch.stack([-(yy - 4.0), xx - 5.0])  # solid rotation: no divergence
    expansion = torch.stack([xx, yy])  # du/dx = dv/dy = 1 in every cell
    assert float(_div_sq(rotation)) == 0.0
    assert float(_div_sq(expansion)) == 4.0 * (H - 1) * (W - 1)
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(2, H, W, generator=g, dtype=torch.float64)
    costs = [_Cost(obs, torch.ones_like(obs), [1.0], [1], alpha=0.0, beta=0.0, sigma=s).terms(
        0.3 * expansion / 10, obs[0])[0] for s in (1.0, 2.0)]
    assert float(costs[0]) > 0 and float(costs[1]) == pytest.approx(float(costs[0]) / 4)
