"""The one nowcasting entry point: :func:`forecast`, with a registry every model plugs into.

A model is a function ``fn(frames, leadtimes, *, velocity, motion, motion_kwargs, **kwargs) -> (nowcast, motion)``
taking a float tensor of past frames ``(T, H, W)`` in mm/h (NaN = no data) and returning the nowcast
``(leadtimes, H, W)`` tensor and the motion field it used ``(2, H, W)`` (or None). Register it with
:func:`register_model`; ``forecast(frames, n, model="name")`` then validates the input and the model's output,
converts numpy/torch/xarray, and returns a tensor for torch input and a numpy array otherwise.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..advection import advect
from .._compat import check_real, native_array
from ..errors import InputError, ShapeError, check_device, check_int
from ..io.units import frames_of_dataarray, warn_implausible_rain

__all__ = ["forecast", "register_model", "get_model", "available_models", "check_frames"]


@dataclass(frozen=True)
class _Model:
    name: str
    fn: Callable[..., torch.Tensor]
    min_frames: int
    uses_motion: bool
    description: str


_MODELS: dict[str, _Model] = {}
_ALIASES: dict[str, str] = {}


def register_model(
    name: str,
    fn: Callable[..., torch.Tensor],
    *,
    min_frames: int = 1,
    uses_motion: bool = False,
    aliases: tuple[str, ...] = (),
    description: str = "",
) -> None:
    """Register a nowcasting model under ``name`` (case-insensitive): ``fn(frames, leadtimes, *, velocity, motion,
    motion_kwargs, **kwargs)`` must return ``(nowcast (leadtimes, H, W), motion (2, H, W) or None)`` (module
    docstring); ``min_frames`` input frames at least; ``uses_motion``: it moves rain along a motion field (takes
    ``velocity=`` / ``motion=``)."""
    key = name.lower()
    _MODELS[key] = _Model(key, fn, min_frames, uses_motion, description)
    for a in aliases:
        _ALIASES[a.lower()] = key


def _takes_weights(fn: Callable[..., Any]) -> bool:
    """Whether a registered model function has a ``weights`` keyword (the neural models, also when registered
    under another name, e.g. a LUPIN with other weights side by side in an evaluation)."""
    import inspect

    try:
        return "weights" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _check_options(m: _Model, options: Mapping[str, Any]) -> None:
    """InputError for keyword arguments that a registered model function does not take (a function with
    ``**kwargs`` checks its own: the networks' ``predict``). Persistence ignored them, extrapolation raised a raw
    TypeError."""
    import inspect

    try:
        params = inspect.signature(m.fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    own = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in ("velocity", "motion",
                                                                                   "motion_kwargs")]
    unknown = sorted(set(options) - set(own))
    if unknown:
        raise InputError(f"model {m.name!r} has no option(s) {', '.join(unknown)}; "
                         f"its options: {', '.join(own) or 'none'}")


def get_model(name: str) -> _Model:
    if not isinstance(name, str):
        raise InputError(f"model must be a name, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _MODELS:
        raise InputError(f"unknown nowcasting model {name!r}; available: {', '.join(available_models())}")
    return _MODELS[key]


def available_models() -> list[str]:
    """Names of the registered nowcasting models."""
    return sorted(_MODELS)


def _stacked(frames: Any, what: str) -> Any:
    """A list or tuple of frames checked for one shape; of tensors, stacked into one (keeping their graph and
    device); of DataArrays (e.g. ``[da[i] for i in ...]``), concatenated along their time so that their times are
    checked as a DataArray's are; anything else unchanged."""
    if not isinstance(frames, (list, tuple)):
        return frames
    shapes = {tuple(np.shape(f)) for f in frames}
    if len(shapes) > 1:
        raise ShapeError(f"{what} must all have the same shape, got {sorted(shapes)}")
    if frames and all(hasattr(f, "dims") and hasattr(f, "values") and not hasattr(f, "data_vars") for f in frames):
        import xarray as xr

        from ..io.units import time_dim

        dim = time_dim(frames[0]) or next((c for c in ("time", "valid_time") if c in frames[0].coords), "time")
        try:  # (the default outer join put frames with slightly different x/y on a union grid, all NaN)
            return xr.concat(list(frames), dim=dim, join="exact")
        except ValueError as exc:
            raise InputError(f"{what} are DataArrays on different grids ({exc}); give frames of one grid") from None
    return torch.stack(list(frames)) if frames and all(isinstance(f, torch.Tensor) for f in frames) else frames


def check_frames(frames: Any, min_frames: int = 1, *, what: str = "frames") -> torch.Tensor:
    """Validate a ``(T, H, W)`` rain-rate sequence in mm/h and return it as a float tensor (no copy if possible)."""
    if hasattr(frames, "data_vars"):  # xarray.Dataset (it has dims and values too)
        name = next(iter(frames.data_vars), "name")
        raise InputError(f"{what}: got an xarray Dataset; pass one variable of it, e.g. ds[{name!r}]")
    if hasattr(frames, "dims") and hasattr(frames, "values"):  # xarray.DataArray
        frames = frames_of_dataarray(frames, what)
    frames = _stacked(frames, what)
    if isinstance(frames, torch.Tensor):
        x = frames
    else:
        arr = native_array(frames)  # masked pixels are no data (NaN), not their fill values
        if arr.dtype.kind not in "iuf":
            raise InputError(f"{what} must be numeric, got dtype {arr.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if not torch.is_floating_point(x):
        x = x.to(torch.float64)
    elif x.dtype in (torch.float16, torch.bfloat16):
        x = x.to(torch.float32)  # half-precision input: computed in float32 (numba and pysteps have no float16)
    if x.ndim != 3:
        raise ShapeError(f"{what} must be a (T, H, W) sequence of rain fields, got shape {tuple(x.shape)}")
    if x.shape[0] < min_frames:
        raise InputError(f"need at least {min_frames} {what} for this method, got {x.shape[0]}")
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ShapeError(f"{what} must be at least 2 x 2 pixels, got {tuple(x.shape[1:])}")
    finite = torch.isfinite(x)
    has_data = finite.reshape(x.shape[0], -1).any(1)  # per frame
    if not bool(has_data.any()):
        raise InputError(f"{what} contain no data: every value is NaN")
    if not bool(has_data.all()):
        empty = torch.nonzero(~has_data).flatten().tolist()
        raise InputError(f"{what} {empty} (0-based) contain no data: every value is NaN; leave such frames out "
                         "(a gap in time is refused too, so nowcast from the frames after it)")
    if bool(torch.isinf(x).any()):
        raise InputError(f"{what} contain infinite values; use NaN for no data")
    lo = float(x.detach()[finite].min())
    if lo < -1e-6:
        raise InputError(
            f"{what} must be rain rates in mm/h (>= 0), found {lo:.3g}; convert dBZ/dBR to mm/h first "
            "(skydiff.io.to_rainrate)"
        )
    warn_implausible_rain(x, what)
    return x


def forecast(
    frames: Any,
    leadtimes: int,
    model: str = "extrapolation",
    motion: str | None = None,
    *,
    velocity: Any = None,
    motion_kwargs: dict[str, Any] | None = None,
    return_velocity: bool = False,
    timestep: float | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> Any:
    """Nowcast ``leadtimes`` steps ahead from past rain fields.

    Parameters
    ----------
    frames
        ``(T, H, W)`` rain rate in mm/h at a regular time step (numpy, torch or an xarray.DataArray from
        :func:`skydiff.io.read_radar`); NaN marks no data.
    leadtimes
        Number of lead times, in steps of the input time step.
    model
        A registered model: ``"extrapolation"`` (semi-Lagrangian, :func:`skydiff.advect`), ``"persistence"``
        (alias ``"eulerian"``), and whatever else is registered (see :func:`available_models`).
    motion
        Motion method (:func:`skydiff.motion.estimate`), unless ``velocity`` is given. None (default): ``"lk"``
        for extrapolation (and models registered with ``uses_motion``), and for the networks that move rain
        along a motion their own (the shipped LUPIN: 4D-Var; L-CNN: Lucas-Kanade). Given to LUPIN or L-CNN, that
        method's motion of the last ``motion_kwargs["frames"]`` frames (default :func:`default_motion_frames`)
        replaces theirs; the other networks refuse it.
    velocity
        Optional precomputed motion ``(2, H, W)`` in pixels per step.
    motion_kwargs
        Extra keyword arguments for the motion method; ``{"frames": n}`` is handled here: the number of most
        recent frames used for motion (default :func:`default_motion_frames`: 3; 4 for 4D-Var, 6 for DARTS, 2 for
        the two-frame methods).
    return_velocity
        Also return the motion field used (or None).
    timestep
        Minutes between the frames. Taken from the time coordinate of a DataArray (which must then be regular);
        for arrays it is unknown unless given. Neural-network models were trained on 5-min steps and refuse
        other steps (nothing is resampled silently); extrapolation and persistence work at any step (lead times
        are in steps of the input).
    device
        Where to compute (``"cuda"``, ``"cuda:1"``, ``"cpu"``); None (default): the frames' device (the CPU for
        numpy and xarray input). The result comes back as the input came (numpy, or a tensor on the frames'
        device). Motion methods that run on numpy (Lucas-Kanade, VET, ...) run on the CPU either way.
    **kwargs
        Options of the model: for ``"extrapolation"`` :func:`skydiff.advect`'s ``n_iter``, ``interp`` and
        ``outval``; for the networks ``weights`` (a weights path), ``precision`` and ``min_rain``. A model refuses
        options it does not take.

    Returns
    -------
    ``(leadtimes, H, W)`` in mm/h, numpy for numpy/xarray input, torch for torch input or a list of tensors (same
    device; the input's dtype when it is floating, else torch's default float dtype); with ``return_velocity`` a
    tuple ``(nowcast, velocity)``.
    """
    frames = _stacked(frames, "frames")
    numpy_in = not isinstance(frames, torch.Tensor)
    if isinstance(leadtimes, bool) or not isinstance(leadtimes, (int, np.integer)) or leadtimes < 1:
        raise InputError(f"leadtimes must be a positive number of steps, got {leadtimes!r}")
    m = get_model(model)
    step = _frames_timestep(frames, timestep)
    if step is not None and m.name in _NN_MIN_FRAMES and abs(step - NN_TIMESTEP_MIN) > 1e-6:
        raise InputError(
            f"model {m.name!r} was trained on {NN_TIMESTEP_MIN:g}-min steps but the frames are {step:g} min apart; "
            f"resample them to {NN_TIMESTEP_MIN:g} min first (skydiff.io.resample_time; skydiff nowcast "
            f"--resample {NN_TIMESTEP_MIN:g}) or use model='extrapolation', which works at any step"
        )
    if "weights" in kwargs and not _takes_weights(m.fn):
        raise InputError(f"model {m.name!r} has no weights; weights= is for the neural models "
                         f"({', '.join(_NN_MIN_FRAMES)}) and models registered with a weights= parameter")
    if velocity is not None and not m.uses_motion:
        raise InputError(f"model {m.name!r} does not take a motion field (velocity=); it applies to "
                         f"{', '.join(k for k, v in _MODELS.items() if v.uses_motion)}")
    neural = m.name in _NN_MIN_FRAMES
    if motion is not None and velocity is not None:  # motion= was ignored silently
        raise InputError("give either motion= (a method to estimate the motion) or velocity= (a motion field), "
                         "not both")
    if motion is not None and not m.uses_motion:
        raise InputError(f"model {m.name!r} moves no rain along a motion field; motion= applies to "
                         f"{', '.join(k for k, v in _MODELS.items() if v.uses_motion)}")
    if motion_kwargs:  # they go to the motion method, which runs only in these cases (ignored silently before)
        if not m.uses_motion or velocity is not None:
            raise InputError(f"motion_kwargs are for the motion method; model {m.name!r} "
                             f"{'was given velocity=' if m.uses_motion else 'moves no rain along a motion'}, so "
                             "none runs")
        if neural and motion is None:
            raise InputError(f"motion_kwargs apply to the method given by motion=; {m.name!r} estimates its own "
                             f"motion without them: pass motion= (e.g. its own, {own_motion(m.name)!r}) with them")
    _check_options(m, kwargs)
    dev = check_device(device, "a nowcast")
    x = check_frames(frames, input_frames(m.name, kwargs.get("weights")) if neural else m.min_frames)
    home = x.device
    if dev is not None and x.device != dev:
        x = x.to(dev)
        if isinstance(velocity, torch.Tensor):
            velocity = velocity.to(dev)
    if motion is not None and neural and velocity is None:  # the caller's method, not theirs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pysteps' LK warns on sparse features; the flow is still returned
            velocity = _velocity_for(x, None, motion, dict(motion_kwargs or {}))
    res = m.fn(x, int(leadtimes), velocity=velocity, motion=motion or "lk", motion_kwargs=dict(motion_kwargs or {}),
               **kwargs)
    if not (isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], torch.Tensor)):
        raise InputError(f"model {m.name!r} must return (nowcast tensor, motion or None), got {type(res).__name__}; "
                         "see skydiff.nowcast.register_model")  # (a bare nowcast was unpacked as two tensors)
    out, vel = res
    if tuple(out.shape) != (int(leadtimes), *x.shape[1:]):
        raise ShapeError(f"model {m.name!r} returned a nowcast of shape {tuple(out.shape)}, not "
                         f"{(int(leadtimes), *x.shape[1:])} (leadtimes, H, W)")
    if numpy_in:
        out = out.detach().cpu().numpy()
        if vel is not None:
            vel = vel.detach().cpu().numpy() if isinstance(vel, torch.Tensor) else np.asarray(vel)
    else:  # on the frames' device (computed where device= said); floating frames' dtype (half: computed in float32)
        out = out.to(home, frames.dtype if frames.is_floating_point() else torch.get_default_dtype())
        vel = vel.to(home) if isinstance(vel, torch.Tensor) else vel
    if return_velocity:
        return out, vel
    return out


_MOTION_FRAMES = {"4dvar": 4, "darts": 6}  # DARTS needs N_t + 2 frames (pysteps default N_t = 4)
NN_TIMESTEP_MIN = 5.0


def _frames_timestep(frames: Any, timestep: float | None) -> float | None:
    """Minutes between frames: from a DataArray's time coordinate, which must be regular (its spacing, not a
    ``timestep`` attribute that may be stale after a resampling), and agree with ``timestep`` when that is given;
    else ``timestep``."""
    import xarray as xr

    from ..errors import TimeGapError
    from ..io import check_regular
    from ..io.radar import _infer_timestep
    from ..io.units import datetimes_of, positive_minutes, time_dim

    given = None if timestep is None else positive_minutes(timestep)
    td = time_dim(frames) if hasattr(frames, "dims") and not hasattr(frames, "data_vars") else None
    if td is None or td not in frames.coords or frames.sizes.get(td, 0) < 2:
        return given
    t = datetimes_of(frames, td)
    if t is None:
        return given
    step = _infer_timestep(t.astype("datetime64[ns]"))
    try:
        check_regular(xr.DataArray(np.zeros(t.size), dims="time", coords={"time": t}),
                      timestep=step)  # (its times alone, as datetime64, under the name check_regular reads)
    except TimeGapError as exc:
        raise InputError(f"the frames are not at a regular time step ({exc}): a nowcast needs consecutive frames "
                         "without gaps") from None
    if step is not None and given is not None and abs(step - given) > 1e-6 * given:
        raise InputError(f"timestep = {given:g} min, but the frames' time coordinate is {step:g} min apart; "
                         "leave timestep out (it is read from the times) or give the frames' own")
    return step if step is not None else given


def default_motion_frames(method: str) -> int:
    """Number of most recent frames a nowcast gives the motion method by default: 4 for 4D-Var (15-min
    window), 6 for DARTS (pysteps' N_t = 4 needs N_t + 2), the method's maximum if it has one (VET 3,
    Proesmans 2), else 3 (pysteps' examples)."""
    from ..motion import get_method

    rec = get_method(method)
    if rec.name in _MOTION_FRAMES:
        return _MOTION_FRAMES[rec.name]
    return int(min(rec.max_frames or 3, 3))


def _velocity_for(x: torch.Tensor, velocity: Any, motion: str, motion_kwargs: dict[str, Any]) -> torch.Tensor:
    if velocity is not None:
        if isinstance(velocity, torch.Tensor):
            v = velocity
            check_real(v, "velocity", "iuf")
        else:
            try:
                arr = np.asarray(velocity)
            except ValueError:  # ragged
                raise InputError("velocity must be a (2, H, W) array of pixels per step") from None
            check_real(arr, "velocity", "iuf")
            v = torch.from_numpy(arr.astype(np.float64))
        if v.shape != (2, *x.shape[1:]):
            raise ShapeError(f"velocity must be (2, H, W) = {(2, *x.shape[1:])}, got {tuple(v.shape)}")
        return v.to(dtype=x.dtype, device=x.device)
    from ..motion import estimate

    n = motion_kwargs.pop("frames", None)
    if n is None:
        n = default_motion_frames(motion)
    n = check_int("motion_kwargs['frames'] (the frames the motion is estimated from)", n, 2)
    if n > x.shape[0]:  # (x[-n:] silently took the T there are)
        raise InputError(f"motion_kwargs['frames'] = {n}: only {x.shape[0]} frames were given")
    return estimate(x[-n:], method=motion, **motion_kwargs).to(dtype=x.dtype, device=x.device)


def _extrapolation(
    x: torch.Tensor,
    leadtimes: int,
    *,
    velocity: Any,
    motion: str,
    motion_kwargs: dict[str, Any],
    n_iter: int = 1,
    interp: str = "bilinear",
    outval: float = float("nan"),
) -> tuple[torch.Tensor, torch.Tensor]:
    v = _velocity_for(x, velocity, motion, motion_kwargs)
    out = advect(x[-1][None, None], v[None], leadtimes, n_iter=n_iter, interp=interp, outval=outval)
    return out[0, :, 0], v


def _persistence(x: torch.Tensor, leadtimes: int, *, velocity: Any = None, motion: str | None = None,
                 motion_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, None]:
    return x[-1][None].expand(leadtimes, -1, -1).clone(), None


register_model(
    "extrapolation",
    _extrapolation,
    min_frames=2,
    uses_motion=True,
    aliases=("lagrangian", "semilagrangian"),
    description="semi-Lagrangian extrapolation of the last frame along the estimated motion (skydiff.advect)",
)
register_model(
    "persistence",
    _persistence,
    min_frames=1,
    aliases=("eulerian",),
    description="the last observation, unchanged",
)


# --------------------------------------------------------------------------------------------------------------
# neural-network models (skydiff.nowcast.models): weights are the shipped ones (pretrained=True) or a file the
# user trained (`weights="path/to/model.safetensors"`); models are cached per (name, weights, device)

_NN_CACHE: dict[tuple[Any, ...], Any] = {}
_NN_MIN_FRAMES = {"rainnet": 4, "smaat": 12, "lupin": 6, "lcnn": 5, "spatspark": 12}


def input_frames(name: str, weights: Any = None) -> int:
    """Frames the nowcast model ``name`` needs: a network's own ``n_input_frames`` (a user's ``weights`` may take
    more or fewer than the shipped ones), else the registered ``min_frames``."""
    m = get_model(name)
    if m.name not in _NN_MIN_FRAMES:
        return int(m.min_frames)
    return int(_network(m.name, weights, "cpu").n_input_frames)


def is_neural(name: str) -> bool:
    """True if the nowcast model ``name`` (or alias) is a neural network (``predict``-based, takes ``precision``)."""
    return get_model(name).name in _NN_MIN_FRAMES


def _network(name: str, weights: Any, device: torch.device | str) -> Any:
    """The network ``name`` with ``weights`` (None/True: the shipped ones; False: untrained; or a path) on ``device``,
    in eval mode, from the cache. The shipped weights are keyed by their path, so a different weights folder is never
    served from cache; a user's weights by the real path of their files and the files' size and modification time,
    so weights saved again under the same path (or a relative path from another folder) are read anew, and the
    entry they replace is dropped; untrained models have their own key."""
    from ..registry import create_model, weights_dir, weights_version

    stamp: tuple[Any, ...] = ()
    if weights is None or weights is True:
        tag = str(weights_dir(name) / name)
    elif weights is False:
        tag = "<untrained>"
    elif isinstance(weights, (str, os.PathLike)):
        tag, stamp = weights_version(weights)
    else:
        raise InputError(f"weights must be a path to saved weights, True (the shipped ones) or False "
                         f"(untrained), got {type(weights).__name__}")
    key = (name, tag, str(device), stamp)
    if key not in _NN_CACHE:
        model = create_model(name, pretrained=weights if weights is not None else True)
        for old in [k for k in _NN_CACHE if k[:3] == key[:3]]:  # an earlier version of these files
            del _NN_CACHE[old]
        _NN_CACHE[key] = model.to(device).eval()
    return _NN_CACHE[key]


def own_motion(name: str, weights: Any = None) -> str | None:
    """The motion a network moves rain along when given none (the shipped LUPIN ``"4dvar"``, L-CNN ``"lk"``, a
    learned-motion LUPIN ``"learned (MF-U-Net)"``); None for the networks without one."""
    key = get_model(name).name
    if key not in ("lupin", "lcnn"):
        return None
    m = _network(key, weights, "cpu")
    if key == "lcnn":
        return str(m.motion_method)
    return str(m.motion_prior) if m.motion_prior else "learned (MF-U-Net)"


def _nn_model(name: str) -> Callable[..., Any]:
    def run(
        x: torch.Tensor,
        leadtimes: int,
        *,
        velocity: Any = None,
        motion: str = "lk",
        motion_kwargs: dict[str, Any],
        weights: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        model = _network(name, weights, x.device)
        if "return_motion" in kwargs:
            raise InputError("return_motion is not an option of forecast(): pass return_velocity=True to get the "
                             "motion the nowcast used")
        if velocity is not None:  # lcnn, lupin (a LUPIN with a motion_prior; the others refuse it)
            kwargs["velocity"] = velocity
        out, vel = model.predict(x, leadtimes, return_motion=True, **kwargs)  # vel: L-CNN's / LUPIN's motion
        def like_x(a: Any) -> torch.Tensor:  # the nowcast and the motion in the input's dtype (networks: float32)
            return (a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))).to(dtype=x.dtype,
                                                                                             device=x.device)

        return like_x(out), None if vel is None else like_x(vel)

    return run


for _name, _n in _NN_MIN_FRAMES.items():
    register_model(
        _name,
        _nn_model(_name),
        min_frames=_n,
        uses_motion=_name in ("lcnn", "lupin"),
        description=f"neural network '{_name}' (skydiff.nowcast.models; shipped weights or weights=PATH)",
    )
