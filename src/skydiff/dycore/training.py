"""Training the NEUVE coordinate by backpropagation through the dynamical core.

Loss (the Klemp 2011 resting-atmosphere test, whose exact solution is ``w = 0``): the mean over a window of
``log(mean(w^2))`` sampled every few steps, on training terrains, plus a penalty keeping the thinnest layer
above ``sigma_floor * dr`` so that the coordinate stays stable at the same time step as SLEVE. Gradients go
through the whole window with gradient checkpointing (:func:`~skydiff.dycore.stepping.integrate_loss`). NEUVE is
first fitted to SLEVE (a cheap regression of the heights, no solver) and then trained. Held-out terrains (other
``h0``/``a``/``lambda``) are evaluated at the end, NEUVE beside SLEVE and BTF.

Other objectives (``train_neuve(objective=...)``, ``skydiff dycore train --objective``): ``"schaer"``, the Schär
w error against the linear solution (:func:`schaer_loss`, 25 m mountain where linear theory is exact), and
``"both"``, the Klemp terrains and the Schär loss in turn (``benchmarks/RESULTS.md`` §7f: neither was shipped).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ReadError, check_seed, positive_finite
from ..io.atomic import atomic_path
from ..registry import save_model
from .cases import build, get_case
from .coordinates import Neuve, Sleve, Terrain, VerticalCoordinate, coordinate_metrics
from .equations import full_w
from .stepping import StabilityError, integrate, integrate_loss

__all__ = ["TRAIN_TERRAINS", "HELDOUT_TERRAINS", "fit_to_coordinate", "klemp_loss", "schaer_loss", "train_neuve",
           "klemp_max_w"]

#: (h0, a, lambda) in m of the training and held-out Klemp-type terrains.
TRAIN_TERRAINS = [(1000.0, 5000.0, 4000.0), (800.0, 4000.0, 3000.0), (1200.0, 6000.0, 5000.0)]
HELDOUT_TERRAINS = [(900.0, 3500.0, 3500.0), (1100.0, 7000.0, 6000.0), (600.0, 5000.0, 2500.0)]

TRAIN_GRID = {"dx": 500.0, "nz": 40, "top": 20000.0, "length": 30000.0}


def _device(model: VerticalCoordinate) -> torch.device:
    """The device of a coordinate's parameters or buffers (the CPU for one without any, e.g. SLEVE)."""
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return t.device if t is not None else torch.device("cpu")


def fit_to_coordinate(model: Neuve, target: VerticalCoordinate, terrains: list[tuple[float, float, float]],
                      steps: int = 150, lr: float = 1e-2, top: float = 20000.0,
                      sigma_floor: float = 0.75) -> float:
    """Fit NEUVE's heights and Jacobians to another coordinate (regression, no solver); returns the final loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    dev = _device(model)
    x = torch.linspace(-20000.0, 20000.0, 121, dtype=torch.float64, device=dev)[None, :]
    r = torch.linspace(0.0, top, 41, dtype=torch.float64, device=dev)[:, None]
    goals = []
    for h0, a, lam in terrains:
        t = Terrain(h0, a, lam)
        with torch.no_grad():
            m = coordinate_metrics(target, t, x, r, top)
        goals.append((t, m))
    loss = torch.zeros(())
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.zeros((), dtype=torch.float64, device=dev)
        for t, m in goals:
            mm = coordinate_metrics(model, t, x, r, top)
            loss = loss + ((mm.z - m.z) / 100.0).pow(2).mean() + 10.0 * (mm.sigma - m.sigma).pow(2).mean()
            loss = loss + 100.0 * torch.relu(sigma_floor - mm.sigma).pow(2).mean()
        loss.backward()
        opt.step()
    return float(loss.detach())


def _thin_layer_penalty(mdl: Any, sigma_floor: float) -> torch.Tensor:
    """``100 sum relu(sigma_floor - sigma)^2`` over centres and faces: keeps the thinnest layer above the floor."""
    g = mdl.geom
    return 100.0 * (torch.relu(sigma_floor - g.sigma_c).pow(2).sum() + torch.relu(sigma_floor - g.sigma_w).pow(2).sum())


def _slope_penalty(mdl: Any, slope_max: float | None) -> torch.Tensor | float:
    """``100 sum relu(|dz/dx| - slope_max)^2`` over the u points above the crest: keeps the coordinate surfaces aloft
    below ``slope_max`` (steeper ones grew a spurious flow over hours, ``benchmarks/RESULTS.md`` §7j); 0 for None."""
    if slope_max is None:
        return 0.0
    g = mdl.geom
    aloft = g.z_c > g.z_w[0].max().detach()
    return 100.0 * torch.relu(g.slope_u.abs()[aloft] - slope_max).pow(2).sum()


def klemp_loss(model: VerticalCoordinate, terrain: tuple[float, float, float], seconds: float = 600.0, dt: float = 0.5,
               sigma_floor: float = 0.7, chunk: int = 50, use_checkpoint: bool = True,
               compile: bool = False, slope_max: float | None = None) -> tuple[torch.Tensor, float]:
    """Differentiable Klemp-test loss: mean over the window of ``log(mean w^2)`` plus the thin-layer penalty (and,
    with ``slope_max``, a penalty on coordinate surfaces aloft steeper than that, :func:`_slope_penalty`).

    Returns ``(loss, max |w|)`` (m/s) at the end of the window.
    """
    h0, a, lam = terrain
    case = get_case("klemp2011", h0=h0, a=a, lam=lam, **TRAIN_GRID)
    mdl, state = build(case, model, torch.float64, _device(model))
    nsteps = int(round(seconds / dt))

    def lf(s: Any) -> torch.Tensor:
        return torch.log(full_w(s, mdl.geom).pow(2).mean() + 1e-12)

    state, loss = integrate_loss(state, mdl, dt, nsteps, lf, chunk=chunk, every=10, use_checkpoint=use_checkpoint,
                                 compile=compile)
    return loss + _thin_layer_penalty(mdl, sigma_floor) + _slope_penalty(mdl, slope_max), \
        float(state.w.detach().abs().max())


def schaer_loss(model: VerticalCoordinate, seconds: float = 3600.0, dt: float = 0.63, h0: float = 25.0, nz: int = 40,
                zlim: tuple[float, float] = (1000.0, 5000.0), sigma_floor: float = 0.6, chunk: int = 100,
                use_checkpoint: bool = True, compile: bool = False) -> tuple[torch.Tensor, float]:
    """Differentiable Schär-test loss: ``log`` of the relative squared error of w against the linear steady solution.

    The Schär case with mountain height ``h0`` (default 25 m: close to linear, where the linear solution is the
    exact reference; at the standard 250 m finite-amplitude effects that no coordinate can remove dominate, see
    ``benchmarks/RESULTS.md`` §7f) on ``nz`` levels is run for ``seconds``; the error is taken at the end, over
    ``|x| <= 20 km`` and ``zlim`` (m), where the wave has settled by then (1 h: up to ~5 km). The linear solution
    is tabulated every 10 m in height and interpolated linearly to the model's w heights, so the loss is
    differentiable with respect to the heights as well as to w. Plus the thin-layer penalty of :func:`klemp_loss`.

    Returns ``(loss, relative l2 error)`` (the error as a float).
    """
    import numpy as np

    from .cases import schaer_linear_w

    case = get_case("schaer", h0=h0, nz=nz)
    mdl, state = build(case, model, torch.float64, _device(model))
    nsteps = int(round(seconds / dt))
    x = mdl.geom.x_c.detach()
    sel = torch.nonzero(x.abs() <= 20000.0).flatten()
    dzt = 10.0
    zt = np.arange(0.0, zlim[1] + 2000.0, dzt)
    t = case.terrain
    table = schaer_linear_w(x[sel].cpu().numpy()[None, :], zt[:, None], t.h0, t.a, t.lam, case.u0, case.n,
                            density_theta0=case.theta0)
    table = torch.as_tensor(table, dtype=torch.float64, device=x.device)  # (len(zt), nsel)
    err = [float("nan")]

    def lf(s: Any) -> torch.Tensor:
        w = full_w(s, mdl.geom)[:, sel]
        z = mdl.geom.z_w[:, sel]
        pos = (z / dzt).clamp(0.0, len(zt) - 1.001)
        i0 = pos.detach().floor().long()
        f = pos - i0
        target = torch.gather(table, 0, i0) * (1.0 - f) + torch.gather(table, 0, i0 + 1) * f
        zd = z.detach()
        mask = ((zd >= zlim[0]) & (zd <= zlim[1])).to(w.dtype)
        rel2 = ((w - target) * mask).pow(2).sum() / (target * mask).pow(2).sum()
        err[0] = float(rel2.detach().sqrt())
        return torch.log(rel2)

    _, loss = integrate_loss(state, mdl, dt, nsteps, lf, chunk=chunk, every=nsteps, use_checkpoint=use_checkpoint,
                             compile=compile)
    return loss + _thin_layer_penalty(mdl, sigma_floor), err[0]


def klemp_max_w(coordinate: VerticalCoordinate, terrain: tuple[float, float, float], seconds: float = 1800.0,
                dt: float = 0.5, compile: bool = False, **grid: Any) -> float:
    """Max |w| (m/s) over a Klemp run of ``seconds`` (no gradients)."""
    h0, a, lam = terrain
    case = get_case("klemp2011", h0=h0, a=a, lam=lam, **(grid or TRAIN_GRID))
    out = [0.0]
    with torch.no_grad():
        mdl, state = build(case, coordinate, torch.float64, _device(coordinate))

        def cb(n: int, s: Any) -> None:
            out[0] = max(out[0], float(full_w(s, mdl.geom).abs().max()))

        integrate(state, mdl, dt, int(round(seconds / dt)), check_every=20, callback=cb, compile=compile)
    return out[0]


def train_neuve(out: str | Path = "runs/dycore/neuve", iterations: int = 15, seconds: float = 300.0, lr: float = 3e-3,
                seed: int = 0, progress: bool = True, eval_seconds: float = 900.0,
                init: str | Path | None = None, fit_target: str = "sleve2", sigma_floor: float = 0.6,
                compile: bool = False, terrains: list[tuple[float, float, float]] | None = None,
                objective: str = "klemp", schaer_seconds: float = 3600.0, resume: bool = True,
                overwrite: bool = False, slope_max: float | None = None) -> dict[str, Any]:
    """Train NEUVE on :data:`TRAIN_TERRAINS`, evaluate on :data:`HELDOUT_TERRAINS`, save ``<out>.safetensors/.json``.

    ``objective``: ``"klemp"`` (default: :func:`klemp_loss` over ``seconds``, one training terrain per iteration in
    turn), ``"schaer"`` (:func:`schaer_loss` over ``seconds``, every iteration; ``terrains`` unused) or ``"both"``
    (the Klemp terrains and then the Schär loss over ``schaer_seconds``, one per iteration in turn, each as a
    log-ratio to SLEVE's loss); the held-out Klemp evaluation is run for all.

    ``slope_max``: the Klemp loss also penalises coordinate surfaces above the crest steeper than this
    (:func:`_slope_penalty`; default None: no penalty).

    ``terrains`` replaces the training terrains ``(h0, a, lam)`` in m (default :data:`TRAIN_TERRAINS`); a terrain
    that is also held out is refused.

    ``compile=True`` runs the solver's steps compiled (:func:`skydiff.dycore.stepping.step_function`; ~5x faster
    gradients on one CPU thread).

    After every iteration the training state (weights, optimiser, losses, best weights) is written atomically to
    ``<out>.ckpt``; a run that stops (Ctrl-C, a killed job) is continued from it by calling again with the same
    ``out`` and settings (``resume=True``, the default; other settings are refused, ``resume=False`` starts
    again; ``iterations`` may be raised). The file is removed once the weights are saved. ``init`` must not be
    ``out`` (the weights the run starts from would be replaced), and existing weights at ``out`` without an
    unfinished run to continue are only replaced with ``overwrite=True``.

    Returns a summary dict (iterations, time, losses, held-out max |w| of NEUVE / SLEVE / BTF, weights path,
    ``resumed_from``: the iteration a resumed run continued from, else None).
    """
    from tqdm.auto import tqdm

    from .coordinates import BasicTerrainFollowing

    if objective not in ("klemp", "schaer", "both"):
        raise InputError(f"unknown NEUVE training objective {objective!r}; use 'klemp', 'schaer' or 'both'")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise InputError(f"iterations must be a positive integer, got {iterations!r}")
    for name, value in (("seconds", seconds), ("lr", lr), ("eval_seconds", eval_seconds),
                        ("schaer_seconds", schaer_seconds), ("sigma_floor", sigma_floor)):
        if not positive_finite(value):
            raise InputError(f"{name} must be a positive number, got {value!r}")
    if slope_max is not None and not positive_finite(slope_max):
        raise InputError(f"slope_max must be a positive number (a slope dz/dx) or None, got {slope_max!r}")
    if slope_max is not None and objective == "schaer":
        raise InputError("slope_max applies to the Klemp loss; objective='schaer' has none")
    # the shortest windows that hold a loss sample: klemp_loss samples every 10 steps of 0.5 s, schaer_loss after the
    # last of its 0.63-s steps, the evaluation (klemp_max_w) needs one 0.5-s step
    windows = [("seconds", seconds, objective, 0.63 if objective == "schaer" else 5.0),
               ("eval_seconds", eval_seconds, "eval", 0.5)]
    if objective == "both":
        windows.append(("schaer_seconds", schaer_seconds, "schaer", 0.63))
    for name, value, what, least in windows:
        if value < least:
            raise InputError(f"{name} = {value:g} s is too short: the {what} window needs at least {least:g} s to "
                             "give a loss")
    train_terrains = [tuple(float(v) for v in t) for t in (terrains or TRAIN_TERRAINS)]
    if any(len(t) != 3 for t in train_terrains):
        raise InputError("training terrains must be (h0, a, lam) triples in m")
    if set(train_terrains) & set(HELDOUT_TERRAINS):
        raise InputError(f"training terrains {sorted(set(train_terrains) & set(HELDOUT_TERRAINS))} are held out")
    from ..registry import weights_paths
    from .coordinates import make_coordinate
    from .equations import geometry

    for h0, a, lam in train_terrains:  # a terrain SLEVE (the loss's reference) or the fit target cannot grid: now,
        case = get_case("klemp2011", h0=h0, a=a, lam=lam, **TRAIN_GRID)  # not after minutes of fitting
        for ref in (Sleve(), make_coordinate(fit_target)):
            geometry(case.grid, ref, case.terrain, name=f"{getattr(ref, 'name', 'target')} on training terrain "
                                                        f"(h0={h0:g}, a={a:g}, lam={lam:g})")

    weights = weights_paths(out)[0]
    init_file = None if init is None else os.path.realpath(weights_paths(init)[0])
    if init_file is not None and init_file == os.path.realpath(weights):
        raise InputError(f"init {init} is the weights file this run writes ({weights}); give another out")
    if init is not None:  # (another model's weights failed in its first time step, after minutes of SLEVE runs)
        from ..registry import load_model

        init_model = load_model(init)
        if not isinstance(init_model, Neuve):
            raise InputError(f"init {init} holds a {type(init_model).__name__}, not NEUVE weights")
    state_file = weights.with_suffix(".ckpt")
    settings = {"objective": objective, "seconds": float(seconds), "lr": float(lr), "seed": check_seed(seed),
                "init": init_file, "fit_target": fit_target,
                "sigma_floor": float(sigma_floor), "terrains": [list(t) for t in train_terrains],
                "schaer_seconds": float(schaer_seconds),
                "slope_max": None if slope_max is None else float(slope_max)}
    saved = _read_state(state_file, settings) if resume and state_file.is_file() else None
    held = [p for p in weights_paths(weights) if p.is_file()]  # (the card too: a file of the user's was replaced)
    if saved is None and held and not overwrite:
        raise InputError(f"{held[0]} exists (an earlier run's weights or card) and there is no unfinished run to "
                         "continue: this run would replace it; give another out, or overwrite=True (CLI: "
                         "--overwrite)")
    if saved is not None and saved["iteration"] > iterations:
        raise InputError(f"{state_file} holds an unfinished run already {saved['iteration']} iterations long; ask for "
                         f"at least that many iterations to continue it (now {iterations}), or start again "
                         "(resume=False; CLI: --restart)")
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    sleve = Sleve()
    if init is not None:  # continue from saved weights (e.g. an earlier run), skipping the fit to SLEVE
        model = init_model.double()
        fit = float("nan")
    elif saved is not None:
        model, fit = Neuve().double(), saved["fit"]
    else:
        model = Neuve().double()
        fit = fit_to_coordinate(model, make_coordinate(fit_target), train_terrains + [(250.0, 5000.0, 4000.0)],
                                sigma_floor=sigma_floor)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[float] = []

    schaer_window = seconds if objective == "schaer" else schaer_seconds

    def loss_of(coord: VerticalCoordinate, terr: Any, smax: float | None = slope_max) -> torch.Tensor:
        if terr == "schaer":
            return schaer_loss(coord, schaer_window, sigma_floor=sigma_floor, compile=compile)[0]
        return klemp_loss(coord, terr, seconds, sigma_floor=sigma_floor, compile=compile, slope_max=smax)[0]

    klemp_terrains = list(train_terrains)
    # the items trained on in turn: Klemp terrains and/or "schaer"
    train_terrains = {"klemp": train_terrains, "schaer": ["schaer"], "both": train_terrains + ["schaer"]}[objective]
    start = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        start, history, best, sleve_loss = saved["iteration"], saved["history"], saved["best"], saved["sleve_loss"]
        sleve_loss = {(tuple(k) if isinstance(k, list) else k): v for k, v in sleve_loss}
        if progress:
            print(f"train_neuve: resuming from {state_file} after iteration {start}", file=sys.stderr, flush=True)
    else:
        sleve_loss = {terr: float(loss_of(sleve, terr, None).detach()) for terr in train_terrains}  # (unpenalised)
        best = (math.inf, {k: v.detach().clone() for k, v in model.state_dict().items()})
    bar = tqdm(range(start, iterations), disable=not progress, desc="neuve", initial=start, total=iterations)
    for it in bar:
        opt.zero_grad()
        terr = train_terrains[it % len(train_terrains)]  # one training terrain per iteration, in turn
        with _diverged(f"NEUVE became unstable in training iteration {it + 1} on {terr}", lr):
            loss = loss_of(model, terr)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        # Schär (one loss per iteration): keep the weights the loss belongs to; Klemp and joint (several items in
        # turn): the weights after the step, as for the shipped weights
        before = {k: v.detach().clone() for k, v in model.state_dict().items()} if objective == "schaer" else None
        opt.step()
        rel = float(loss.detach()) - sleve_loss[terr]  # log-ratio of mean w^2 (Schär: squared error) to SLEVE's
        history.append(rel)
        recent = sum(history[-len(train_terrains):]) / len(history[-len(train_terrains):])
        if len(history) >= len(train_terrains) and recent < best[0]:
            best = (recent, before or {k: v.detach().clone() for k, v in model.state_dict().items()})
        bar.set_postfix(loss_vs_sleve=f"{rel:.3f}")
        with atomic_path(state_file, suffix=".tmp.ckpt") as tmp:  # the state after this iteration, to resume from
            torch.save({"settings": settings, "iteration": it + 1, "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "history": history, "best": best, "fit": fit,
                        "sleve_loss": [[list(k) if isinstance(k, tuple) else k, v] for k, v in sleve_loss.items()]},
                       tmp)
    if math.isfinite(best[0]):  # else fewer iterations than items trained on in turn: keep the last weights
        model.load_state_dict(best[1])
    from .coordinates import Sleve2

    coords = (("neuve", model), ("sleve", sleve), ("sleve2", Sleve2()), ("btf", BasicTerrainFollowing()))
    evaluation: dict[str, Any] = {}  # the first training terrain, then the held-out ones (the card keeps them apart)
    for terr in klemp_terrains[:1] + HELDOUT_TERRAINS:
        with _diverged(f"the trained NEUVE is unstable in the Klemp evaluation on terrain h0={terr[0]:g} "
                       f"a={terr[1]:g} lam={terr[2]:g}", lr):
            evaluation["h0=%g a=%g lam=%g" % terr] = {name: klemp_max_w(c, terr, eval_seconds, compile=compile)
                                                      for name, c in coords}
    keys = list(evaluation)
    card = {
        "trained_on": {
            "klemp": "klemp2011 loss mean log(mean w^2) over %g s, dt 0.5 s, grid %s" % (seconds, TRAIN_GRID),
            "schaer": "schaer loss log(relative squared w error vs the linear solution) after %g s, h0 25 m, nz 40, "
                      "dt 0.63 s, |x| <= 20 km, 1-5 km" % seconds,
            "both": "klemp2011 loss over %g s on the training terrains and the schaer loss after %g s (h0 25 m, "
                    "nz 40, 1-5 km) in turn, each minus SLEVE's" % (seconds, schaer_seconds)}[objective],
        "train_terrains": train_terrains,
        "heldout_terrains": HELDOUT_TERRAINS,
        "init": ("continued from %s" % init) if init is not None else
        "fitted to %s (default options), regression loss %.3g" % (fit_target, fit),
        "sigma_floor": sigma_floor,
        **({} if slope_max is None else {"slope_max_aloft": float(slope_max)}),
        "loss_history_log_ratio_to_sleve": history,
        "best_loss": best[0] if math.isfinite(best[0]) else None,
        # (the first Klemp training terrain; a Schaer-only training trains on none: there it is a reference)
        ("train_max_w_%gs" if objective != "schaer" else "reference_max_w_%gs") % eval_seconds:
            {keys[0]: evaluation[keys[0]]},
        "heldout_max_w_%gs" % eval_seconds: {k: evaluation[k] for k in keys[1:]},
    }
    w, _ = save_model(model, out, card=card)
    state_file.unlink(missing_ok=True)  # the run is complete: nothing to resume
    return {"iterations": iterations, "time_s": time.perf_counter() - t0, "loss": history, "evaluation": evaluation,
            "weights": str(w), "fit_loss": fit, "resumed_from": start or None}


@contextlib.contextmanager
def _diverged(what: str, lr: float) -> Iterator[None]:
    """A StabilityError inside as an InputError that says training diverged: its own advice (a smaller time step,
    smoother terrain) is no option of a training run."""
    try:
        yield
    except StabilityError as exc:
        raise InputError(f"{what} ({exc}): training diverged; train again with a lower lr (now {lr:g}) and "
                         "resume=False (CLI: --restart)") from None


def _read_state(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The training state of an unfinished :func:`train_neuve` run; InputError when its settings differ."""
    try:
        saved = torch.load(str(path), map_location="cpu", weights_only=True)
        there = saved["settings"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise ReadError(f"cannot read the training state {path} to resume from ({exc}); delete it, or pass "
                        "resume=False (CLI: --restart) to start again") from None
    differ = sorted(k for k in set(there) | set(settings) if there.get(k) != settings.get(k))
    if differ:
        raise InputError(f"{path} holds an unfinished run with other settings ("
                         + ", ".join(f"{k} = {there.get(k)!r} there, {settings.get(k)!r} here" for k in differ)
                         + "); run with those settings to continue it, or start again (resume=False; CLI: --restart)")
    return saved
