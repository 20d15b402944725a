"""Time stepping: SSP-RK3, the explicit stability limit, blow-up detection and checkpointed integration."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import InputError, SkydiffError
from .equations import CP, CV, RD, Model, State, tendencies

__all__ = ["StabilityError", "stable_dt", "check_dt", "ssprk3_step", "step_function", "integrate", "integrate_loss"]


class StabilityError(SkydiffError, FloatingPointError):
    """The integration blew up (non-finite values or an implausible wind) at a named step."""


def stable_dt(model: Model, dx: float, umax: float = 0.0) -> tuple[float, float, float]:
    """Explicit SSP-RK3 limit of the C-grid acoustic + advective spectrum.

    ``dt <= sqrt(3) / (2 (c + |u|) sqrt(1/dx^2 + 1/dz_min^2))`` with ``c = sqrt(cp/cv R T)`` the largest sound
    speed of the reference state and ``dz_min`` the thinnest physical layer or distance between layer centres (``min
    sigma dr`` over the layers and the interior w faces); with diffusion
    ``K`` (``model.diffusion``) also ``dt <= 2.51 / (4 K (1/dx^2 + 1/dz_min^2))``.

    Returns ``(dt_max, dz_min, c)`` in s, m, m/s.
    """
    geom, ref = model.geom, model.ref
    temp = (ref.theta_c * ref.exner_c).detach()
    c = float(torch.sqrt(CP / CV * RD * temp).max())
    dz_min = float((geom.sigma_c.detach().min()) * model.dr)
    if geom.sigma_w.shape[0] > 2:  # the distances between layer centres; the ground and lid faces (where w = 0
        # and no equation reads sigma_w) do not count (NEUVE's lid value, wrong by half until the nineteenth
        # session, cut its limit by 20-35 %)
        dz_min = min(dz_min, float(geom.sigma_w[1:-1].detach().min()) * model.dr)
    if not (math.isfinite(c) and math.isfinite(dz_min) and dz_min > 0):
        raise InputError(f"no stability limit: the reference state's largest sound speed is {c:.3g} m/s and the "
                         f"thinnest layer {dz_min:.3g} m (a non-finite or collapsed reference atmosphere or grid)")
    omega = 2.0 * (c + abs(umax)) * math.sqrt(1.0 / dx**2 + 1.0 / dz_min**2)
    limit = math.sqrt(3.0) / omega
    if model.diffusion > 0:  # explicit diffusion: SSP-RK3 is stable on the negative real axis down to -2.51
        limit = min(limit, 2.51 / (4.0 * model.diffusion * (1.0 / dx**2 + 1.0 / dz_min**2)))
    return limit, dz_min, c


def check_dt(model: Model, dt: float, umax: float = 0.0, name: str = "") -> float:
    """Raise :class:`InputError` if ``dt`` (s) exceeds :func:`stable_dt`; returns the limit."""
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise InputError(f"time step must be a positive number of seconds, got {dt!r}")
    lim, dz_min, c = stable_dt(model, model.dx, umax)
    if dt > lim:
        raise InputError(
            f"time step dt = {dt:g} s exceeds the explicit stability limit {lim:.3g} s "
            f"(sound speed {c:.0f} m/s + wind {abs(umax):.0f} m/s, dx = {model.dx:g} m, thinnest layer dz_min = "
            f"{dz_min:.1f} m{' with coordinate ' + name if name else ''}); use dt <= {_round_down(lim):g} s"
        )
    return lim


def _round_down(limit: float) -> float:
    """A stability limit (s) rounded down: to whole milliseconds, to 3 significant digits below 1 ms."""
    if limit >= 1e-3:
        return math.floor(limit * 1000.0) / 1000.0
    e = math.floor(math.log10(limit)) - 2
    return math.floor(limit / 10.0**e) * 10.0**e


def ssprk3_step(state: State, model: Model, dt: float) -> State:
    """One step of the three-stage, third-order strong-stability-preserving Runge-Kutta scheme (Shu-Osher)."""
    k0 = tendencies(state, model)
    y1 = State(*(y + dt * k for y, k in zip(state, k0)))
    k1 = tendencies(y1, model)
    y2 = State(*(0.75 * y + 0.25 * (a + dt * k) for y, a, k in zip(state, y1, k1)))
    k2 = tendencies(y2, model)
    return State(*(y / 3.0 + 2.0 / 3.0 * (b + dt * k) for y, b, k in zip(state, y2, k2)))


def step_function(compile: bool = False) -> Callable[[State, Model, float], State]:
    """The SSP-RK3 step, eager (default) or compiled with ``torch.compile`` (inductor).

    Compiled, the ~300 small operations of one step become a few fused loops (C++ on the CPU, Triton on CUDA), for
    the forward pass and for the backward pass alike: measured on the NEUVE training grid (60 x 40 cells, float64,
    one CPU thread) ~3.4x faster forward and ~4x faster gradients (``benchmarks/RESULTS.md`` §7c). Results agree
    with the eager steps to round-off on the NEUVE training grid (max |w| over 900 s of the Klemp test equal to
    3e-15 relative; gradients to 1e-12), and in wind too since in-place buffer reuse is switched off (inductor
    had the last stage read a w it had already overwritten: 2e-5 relative after one Schär step, 5e-4 after 600 s
    of the bubble; found in the fifteenth session). The first call of each new configuration
    (grid, dtype, time step, with/without gradients) compiles for ~10 s and needs a C++ compiler on the CPU or
    Triton on CUDA; a failed compilation raises a :class:`SkydiffError` that says so.
    """
    return _compiled_step() if compile else ssprk3_step


@functools.cache
def _compiled_step() -> Callable[[State, Model, float], State]:
    # no in-place buffer reuse: inductor wrote the last stage's w into the buffer of the stage-3 w that the vertical
    # advection of the face above still read (a windy bubble drifted 5e-4 relative from the eager solver in 600 s)
    compiled = torch.compile(ssprk3_step, dynamic=False, options={"inplace_buffers": False})

    def step(state: State, model: Model, dt: float) -> State:
        try:
            return compiled(state, model, dt)
        except Exception as exc:  # torch._dynamo / inductor errors (no compiler, unsupported platform)
            if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise SkydiffError(f"compile=True failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                   "it needs a C++ compiler on the CPU or Triton on CUDA - run with compile=False"
                                   ) from None
            raise

    return step


def _check(state: State, step: int, dt: float, wmax: float) -> None:
    bad = [n for n, t in zip(State._fields, state) if not bool(torch.isfinite(t).all())]
    if bad:
        raise StabilityError(
            f"the run blew up at step {step} (t = {step * dt:.0f} s): non-finite {', '.join(bad)}; "
            "reduce the time step or smooth the terrain"
        )
    w = float(state.w.detach().abs().max()) if state.w.numel() else 0.0
    if w > wmax:
        raise StabilityError(
            f"the run became unstable at step {step} (t = {step * dt:.0f} s): max |w| = {w:.3g} m/s > {wmax:g} m/s; "
            "reduce the time step or smooth the terrain"
        )


def integrate(
    state: State,
    model: Model,
    dt: float,
    nsteps: int,
    *,
    check_every: int = 50,
    wmax: float = 100.0,
    callback: Callable[[int, State], None] | None = None,
    progress: bool = False,
    compile: bool = False,
) -> State:
    """Advance ``nsteps`` SSP-RK3 steps of ``dt`` s (no autograd graph kept unless the inputs need it).

    Every ``check_every`` steps the state is checked for non-finite values and ``|w| > wmax`` (m/s), raising a
    :class:`StabilityError` that names the step, and ``callback(step, state)`` is called. ``compile=True`` runs
    the steps compiled (:func:`step_function`).
    """
    step = step_function(compile)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=nsteps, unit="step", leave=False, mininterval=1.0)
    for n in range(1, nsteps + 1):
        state = step(state, model, dt)
        if n % check_every == 0 or n == nsteps:
            _check(state, n, dt, wmax)
            if callback is not None:
                callback(n, state)
            if bar is not None:
                bar.update(n - bar.n)
    if bar is not None:
        bar.close()
    return state


def integrate_loss(
    state: State,
    model: Model,
    dt: float,
    nsteps: int,
    loss_fn: Callable[[State], torch.Tensor],
    *,
    chunk: int = 25,
    every: int = 5,
    use_checkpoint: bool = True,
    compile: bool = False,
) -> tuple[State, torch.Tensor]:
    """Integrate and accumulate ``loss_fn(state)`` every ``every`` steps, with gradient checkpointing.

    The steps are run in chunks of ``chunk``; with ``use_checkpoint`` only the chunk boundaries are kept for the
    backward pass (``torch.utils.checkpoint``, non-reentrant, so gradients reach the coordinate parameters
    captured in ``model``). ``compile=True``: compiled steps (:func:`step_function`). Returns the final state and
    the mean of the accumulated losses.
    """
    step = step_function(compile)

    def run_chunk(n0: int, n: int, *ys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = State(*ys)
        acc = torch.zeros((), dtype=s.u.dtype, device=s.u.device)
        for j in range(n):
            s = step(s, model, dt)
            if (n0 + j + 1) % every == 0:
                acc = acc + loss_fn(s)
        return (*s, acc)

    for name, value in (("every", every), ("chunk", chunk)):  # (chunk <= 0 looped for ever)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a whole number of steps >= 1, got {value!r}")
    if isinstance(nsteps, bool) or not isinstance(nsteps, int) or nsteps < every:
        raise InputError(f"a loss window of {nsteps!r} step(s) of {dt:g} s holds no loss sample (one every {every} "
                         f"steps): use a window of at least {every * dt:g} s")
    total = torch.zeros((), dtype=state.u.dtype, device=state.u.device)
    done = 0
    while done < nsteps:
        n = min(chunk, nsteps - done)
        if use_checkpoint:
            out = checkpoint(run_chunk, done, n, *state, use_reentrant=False)
        else:
            out = run_chunk(done, n, *state)
        state, total = State(*out[:4]), total + out[4]
        done += n
        _check(state, done, dt, 1e3)
    return state, total / (nsteps // every)
