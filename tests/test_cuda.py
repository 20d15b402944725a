"""CPU and CUDA give the same answers: every differentiable operator, model and solver, run on both devices.

Skipped where no CUDA device is present (the CPU suite covers the maths); run on a GPU with
``python -m pytest -q tests/test_cuda.py``. Each test computes the same thing on the CPU and on CUDA from the
same inputs and compares the results (float64 where the code supports it, so the tolerances are tight), and
checks that the outputs stay on the inputs' device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    """Full float32 on CUDA: PyTorch lets cuDNN convolutions use TF32 by default (Ampere and later), which alone
    moves the networks' nowcasts by up to ~0.1 mm/h (measured on an H100); the comparisons are of the code."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _rain(T: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    from skydiff.synthetic import rain_sequence

    seq = rain_sequence(T, (H, W), seed=seed)
    return torch.as_tensor(np.asarray(seq), dtype=torch.float64)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> None:
    assert b.device.type == "cuda"
    a, b = a.detach().cpu(), b.detach().cpu()
    assert a.shape == b.shape
    assert torch.equal(torch.isnan(a), torch.isnan(b))
    fa, fb = torch.nan_to_num(a), torch.nan_to_num(b)
    torch.testing.assert_close(fb, fa, rtol=rtol, atol=atol)


# --- the semi-Lagrangian core ------------------------------------------------------------------------------

@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
@pytest.mark.parametrize("outval", [float("nan"), "edge"])
def test_advect_forward_and_gradient_match(interp: str, outval) -> None:  # noqa: ANN001
    import skydiff

    g = torch.Generator().manual_seed(0)
    F = torch.rand(2, 3, 40, 52, generator=g, dtype=torch.float64) * 5
    F[0, 1, 5:9, 7:12] = float("nan")
    V = torch.randn(2, 2, 40, 52, generator=g, dtype=torch.float64).cumsum(-1).cumsum(-2) / 30

    def run(dev: torch.device) -> tuple[torch.Tensor, ...]:
        f = F.to(dev, copy=True).requires_grad_(True)
        v = V.to(dev, copy=True).requires_grad_(True)
        out = skydiff.advect(f, v, 4, interp=interp, outval=outval, backend="torch")
        torch.nan_to_num(out).pow(2).sum().backward()
        return out, f.grad, v.grad

    cpu, gpu = run(torch.device("cpu")), run(CUDA)
    for a, b in zip(cpu, gpu):
        _close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_advect_half_precision_matches_float32(dtype: torch.dtype) -> None:
    import skydiff

    # CUDA takes the torch backend; half-precision fields are computed in float32 there (and on the CPU)
    F = _rain(1, 300, 700)[0].float()
    V = torch.zeros(2, 300, 700)
    V[0], V[1] = 1.25, -0.5  # exact in half precision: the same departure points
    ref = skydiff.advect(F, V, 4)
    out = skydiff.advect(F.to(CUDA, dtype), V.to(CUDA, dtype), 4)
    assert out.dtype == dtype
    ok = torch.isfinite(ref)
    assert torch.equal(ok, torch.isfinite(out.cpu()))
    assert float((out.float().cpu() - ref)[ok].abs().max()) < 0.02 * float(ref[ok].abs().max()) + 1e-3


def test_advect_gradcheck_on_cuda() -> None:
    import skydiff

    g = torch.Generator().manual_seed(1)
    f = (torch.rand(1, 1, 10, 12, generator=g, dtype=torch.float64) + 0.5).to(CUDA).requires_grad_(True)
    v = (torch.randn(1, 2, 10, 12, generator=g, dtype=torch.float64) * 0.4 + 0.3).to(CUDA).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: skydiff.advect(a, b, 2, outval="edge"), (f, v))


def test_operators_match() -> None:
    from skydiff import operators as ops

    V = torch.randn(2, 30, 34, dtype=torch.float64)
    f = torch.randn(30, 34, dtype=torch.float64)
    for fn, arg in ((ops.divergence, V), (ops.curl, V), (ops.gradient, f), (ops.laplacian, f)):
        _close(fn(arg, spacing=(1.0, 2.0)), fn(arg.to(CUDA), spacing=(1.0, 2.0)), rtol=1e-12, atol=1e-12)


# --- nowcasting: every shipped network through forecast() -----------------------------------------------------

def _motion_kw(model: str) -> dict:
    """The shipped LUPIN moves the rain along its own 4D-Var motion (an optimisation whose CPU and CUDA adjoints
    differ at grid nodes, RESULTS §9): a given motion compares the networks alone, as for L-CNN below."""
    if model != "lupin":
        return {}
    v = torch.zeros(2, 96, 80)
    v[0] += 1.5
    v[1] -= 0.5
    return {"velocity": v}


@pytest.mark.parametrize("model", ["lupin", "rainnet", "smaat", "spatspark"])
def test_forecast_shipped_models_match(model: str) -> None:
    from skydiff.nowcast import forecast

    x = _rain(12, 96, 80).float()
    kw = _motion_kw(model)
    cpu = forecast(x, 3, model=model, **kw)
    gpu = forecast(x.to(CUDA), 3, model=model, **{k: v.to(CUDA) for k, v in kw.items()})
    assert gpu.dtype == torch.float32
    # float32 convolutions (cuDNN vs oneDNN): agree to ~1e-3 mm/h on rain of a few mm/h
    _close(cpu, gpu, rtol=1e-3, atol=2e-3)


def test_forecast_lupin_with_its_own_4dvar_motion_on_cuda() -> None:
    """The shipped LUPIN's whole path on CUDA, its 4D-Var motion included (the test above gives it a motion): the
    estimate runs on the frames' device and the nowcast stays there. CPU and CUDA adjoints differ at grid nodes
    (RESULTS §9), so L-BFGS may take another path: the motions must agree to a fraction of a pixel, not bitwise."""
    from skydiff.nowcast import forecast

    x = _rain(12, 96, 80).float()
    cpu, v_cpu = forecast(x, 3, model="lupin", return_velocity=True)
    gpu, v_gpu = forecast(x.to(CUDA), 3, model="lupin", return_velocity=True)
    assert gpu.device.type == "cuda" and v_gpu.device.type == "cuda"
    assert bool(torch.isfinite(gpu).all()) and gpu.shape == cpu.shape
    assert float((v_gpu.cpu() - v_cpu).abs().mean()) < 0.1  # px per step
    assert float((gpu.cpu() - cpu).abs().mean()) < 0.05  # mm/h


def test_4dvar_prior_and_parameters_stay_on_cuda(monkeypatch) -> None:
    """A static audit (seventeenth session): estimate_batch moved 4D-Var's frames to the host (so the shipped
    LUPIN's motion ran on the CPU), and tensor parameters (times, percentiles, levels) on CUDA failed in numpy;
    a NEUVE module on CUDA with device=None met CPU grids."""
    import skydiff.motion.fourdvar as fdv
    from skydiff.dycore import run
    from skydiff.dycore.coordinates import Neuve
    from skydiff.motion import estimate_batch
    from skydiff.verify import percentile_bias

    seen = []
    real = fdv.fourdvar

    def spy(frames, **kw):
        seen.append(frames.device.type)
        return real(frames, **kw)

    monkeypatch.setattr(fdv, "fourdvar", spy)
    x = _rain(4, 48, 40).float().to(CUDA)
    v = estimate_batch(x[None], "4dvar", 4, max_iter=5)
    assert seen == ["cuda"] and v.device.type == "cuda"
    monkeypatch.undo()
    fdv.fourdvar(x, times=torch.tensor([0.0, 5.0, 10.0, 15.0], device=CUDA), max_iter=3)
    percentile_bias(x[0], x[1], q=torch.tensor([99.0], device=CUDA))
    ds = run("klemp2011", coordinate=Neuve().double().to(CUDA), hours=5 / 3600, length=30000.0)
    assert ds.attrs["dt_s"] > 0


@pytest.mark.parametrize("model", ["lupin", "rainnet"])
def test_forecast_mixed_precision_on_cuda(model: str) -> None:
    # precision="bfloat16" on the GPU: autocast convolutions, float32 advection and outputs; close to full precision
    from skydiff.nowcast import forecast

    x = _rain(12, 96, 80).float()
    kw = _motion_kw(model)
    full = forecast(x, 3, model=model, **kw)
    amp = forecast(x.to(CUDA), 3, model=model, precision="bfloat16", **{k: v.to(CUDA) for k, v in kw.items()})
    assert amp.dtype == torch.float32 and amp.device.type == "cuda"
    err = (amp.cpu() - full).abs()
    # bfloat16 rounding is amplified by LUPIN's autoregressive feedback at single rain-edge pixels (RESULTS §5:
    # up to 1.6 mm/h on a CPU crop; 1.25 mm/h of a 9.6 mm/h field measured here on an H100), so the bound is on the
    # mean and the 99.9th percentile, with the maximum only guarded against a blow-up
    scale = float(full.abs().max())
    assert float(err.mean()) < 0.02 and float(err.quantile(0.999)) < 0.1 * scale + 0.05
    assert float(err.max()) < 0.25 * scale + 0.1


def test_dycore_compiled_step_on_cuda() -> None:
    # compile=True on CUDA (Triton): same w as the eager CPU run
    from skydiff.dycore import run

    kw = dict(hours=30.0 / 3600.0, dt=1.0, length=20000.0, nz=12)
    cpu = run("schaer", "sleve", **kw)
    gpu = run("schaer", "sleve", device="cuda", compile=True, **kw)
    np.testing.assert_allclose(gpu["w"].values, cpu["w"].values, rtol=1e-7, atol=1e-10)


def test_forecast_lcnn_with_given_motion_matches() -> None:
    from skydiff.nowcast import forecast

    x = _rain(12, 96, 80).float()
    v = torch.zeros(2, 96, 80)
    v[0] += 1.5
    v[1] -= 0.5
    cpu = forecast(x, 3, model="lcnn", velocity=v)
    gpu = forecast(x.to(CUDA), 3, model="lcnn", velocity=v.to(CUDA))
    _close(cpu, gpu, rtol=1e-3, atol=2e-3)


def test_fourdvar_cost_and_first_iterations_match() -> None:
    # one level, a few L-BFGS iterations from a non-integer first guess: cost (numba trajectory on the CPU, torch
    # steps on CUDA), gradient and first iterates agree. From rest (w = 0) the departure points sit exactly on
    # grid nodes, where bilinear interpolation has a kink and the two backends return different one-sided
    # derivatives, so an unconverged solve from rest differs between the devices (measured: 0.4 px after 3
    # iterations) -- not compared here.
    from skydiff.motion.fourdvar import fourdvar

    x = _rain(4, 48, 56)
    init = torch.stack([torch.full((48, 56), 0.37), torch.full((48, 56), -0.21)]).double()
    kw = dict(levels=1, finest_level=0, max_iter=3, mask_inflow=False)
    with pytest.warns(Warning):  # not converged after 3 iterations: said so
        cpu = fourdvar(x, init_velocity=init, **kw)
    with pytest.warns(Warning):
        gpu = fourdvar(x.to(CUDA), init_velocity=init.to(CUDA), **kw)
    assert gpu.levels[-1].cost_initial == pytest.approx(cpu.levels[-1].cost_initial, rel=1e-9)
    _close(torch.as_tensor(cpu.velocity), gpu.velocity, rtol=1e-5, atol=1e-5)


# --- training through Lightning on one GPU -----------------------------------------------------------------------

def test_train_lupin_stage_on_gpu(tmp_path) -> None:  # noqa: ANN001
    from skydiff.nowcast.training import train

    cfg = {
        "out": str(tmp_path / "run"),
        "accelerator": "gpu",
        "devices": 1,
        "model": {"name": "lupin", "base_channels": 4, "depth": 2, "motion_base_channels": 4, "motion_depth": 2,
                  "in_frames": 4},
        "data": {"source": "synthetic", "n_frames": 10, "shape": [40, 48], "crop": [32, 40], "batch_size": 2,
                 "n_sequences": 1, "n_val_sequences": 1, "n_out": 2},
        "training": {"max_steps": 3, "progress_bar": False, "stage": "motion"},
        "trainer": {"num_sanity_val_steps": 0, "limit_val_batches": 1, "log_every_n_steps": 1,
                    "enable_model_summary": False},
    }
    import json

    info = train(cfg)
    assert info["global_step"] == 3 and (tmp_path / "run" / "lupin.safetensors").exists()
    card = json.loads((tmp_path / "run" / "lupin.json").read_text())
    assert card["card"]["training"]["machine"]["accelerator"] == "CUDAAccelerator"


# --- downscaling ---------------------------------------------------------------------------------------------------

def test_downscale_deterministic_parts_match_and_sampling_stays_on_device() -> None:
    from skydiff.downscale import downscale
    from skydiff.downscale.interface import get_downscaler

    m = get_downscaler("radar")
    lo = (_rain(1, 16, 20)[0] * 1.0).float()
    cpu_m = m.to("cpu")
    _, cond = cpu_m.condition(lo[None])
    x = torch.randn((1,) + tuple(cond.shape[-2:]), generator=torch.Generator().manual_seed(0))
    d_cpu = cpu_m.denoise(x, 0.7, cond)
    t_cpu = cpu_m.denoise_tiled(x, 0.7, cond, tile=32, overlap=8)  # 64 x 80: 2 x 3 blended windows
    pp_cpu = cpu_m.encode(lo[None])
    gpu_m = m.to(CUDA)
    d_gpu = gpu_m.denoise(x.to(CUDA), 0.7, cond.to(CUDA))
    t_gpu = gpu_m.denoise_tiled(x.to(CUDA), 0.7, cond.to(CUDA), tile=32, overlap=8)
    pp_gpu = gpu_m.encode(lo[None].to(CUDA))
    m.to("cpu")
    _close(d_cpu, d_gpu, rtol=1e-3, atol=1e-3)
    _close(t_cpu, t_gpu, rtol=1e-3, atol=1e-3)
    _close(pp_cpu, pp_gpu, rtol=1e-5, atol=1e-5)

    ens = downscale(lo.to(CUDA), factor=4, members=2, steps=4, seed=0, progress=False)  # 64 x 80 > 64: tiled
    assert ens.device.type == "cuda" and ens.shape == (2, 64, 80)
    assert bool(torch.isfinite(ens).all()) and float(ens.min()) >= 0.0
    # a CUDA model takes CPU inputs and a CPU generator (noise drawn on the CPU and moved): the same draws
    gpu_tp = get_downscaler("radar-tp").to(CUDA)
    a = gpu_tp.sample(lo[None], members=2, steps=4, generator=torch.Generator().manual_seed(3), progress=False)
    b = gpu_tp.sample(lo[None].to(CUDA), members=2, steps=4, generator=torch.Generator().manual_seed(3),
                      progress=False)
    assert a.device.type == "cuda"
    _close(a.cpu(), b, rtol=0, atol=0)
    hi = _rain(1, 64, 80)[0].float()[None]
    assert torch.isfinite(gpu_tp.loss(hi, lo[None], generator=torch.Generator().manual_seed(0)))
    dry = torch.zeros(40, 40, device=CUDA)
    dry[5:9, 6:10] = 2.0  # rain in a corner: only the box around it is sampled (on the device), the rest is 0
    ens = downscale(dry, factor=4, members=2, steps=4, seed=0, progress=False)
    assert ens.device.type == "cuda" and ens.shape == (2, 160, 160) and not bool(ens[:, 100:, 100:].any())


# --- the dynamical core --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("coordinate", ["sleve", "neuve"])
def test_dycore_run_matches(coordinate: str) -> None:
    from skydiff.dycore import run

    kw = dict(hours=60.0 / 3600.0, dt=1.0, length=20000.0, nz=12)
    cpu = run("schaer", coordinate, **kw)
    gpu = run("schaer", coordinate, device="cuda", **kw)
    np.testing.assert_allclose(gpu["w"].values, cpu["w"].values, rtol=1e-8, atol=1e-10)
    gpu32 = run("schaer", coordinate, device="cuda", dtype="float32", **kw)
    assert np.abs(gpu32["w"].values - cpu["w"].values).max() <= 1e-3 * max(np.abs(cpu["w"].values).max(), 1e-3)


def test_dycore_gradient_through_solver_matches() -> None:
    from skydiff.dycore.cases import build, get_case
    from skydiff.dycore.coordinates import Neuve
    from skydiff.dycore.equations import full_w
    from skydiff.dycore.stepping import integrate_loss

    def grads(dev: str) -> tuple[float, list[torch.Tensor]]:
        torch.manual_seed(0)
        coord = Neuve().double().to(dev)
        case = get_case("klemp2011", length=20000.0, nz=12)
        model, state = build(case, coord, torch.float64, dev)
        _, loss = integrate_loss(state, model, 0.5, 20, lambda s: full_w(s, model.geom).pow(2).mean(), chunk=10,
                                 every=5, use_checkpoint=True)
        loss.backward()
        return float(loss.detach()), [p.grad.detach().cpu() for p in coord.parameters() if p.grad is not None]

    lc, gc = grads("cpu")
    lg, gg = grads("cuda")
    assert gg and len(gc) == len(gg)
    assert lg == pytest.approx(lc, rel=1e-8)
    for a, b in zip(gc, gg):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-12)
