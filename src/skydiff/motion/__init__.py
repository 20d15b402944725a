"""Motion estimation: a pysteps-style registry of optical-flow methods.

>>> import skydiff.motion as motion
>>> from skydiff.synthetic import rain_sequence
>>> frames = rain_sequence(3, (64, 64)).values      # (T, H, W) mm/h, drifting 3 px right, 1.5 px down a step
>>> velocity = motion.estimate(frames, "lk")        # (2, H, W), pixels per time step, [0] = x, [1] = y
>>> velocity.shape
(2, 64, 64)
>>> motion.methods()
('4dvar', 'constant', 'darts', 'farneback', 'lk', 'none', 'proesmans', 'vet')

Built-in methods wrap :mod:`pysteps.motion` (imported on first use); :func:`fourdvar` (method ``"4dvar"``,
alias ``"fourdvar"``) is the differentiable 4D-Var estimate of ``skydiff/motion/fourdvar.py`` (the name
``skydiff.motion.fourdvar`` is the function; ``importlib.import_module("skydiff.motion.fourdvar")`` gives the
module; its result, :class:`FourDVarResult`, holds a :class:`LevelInfo` per pyramid level); :func:`estimate_batch`
estimates each sequence of a (B, T, H, W) batch (motion (B, 2, H, W), no gradient); further methods are added with
:func:`register`. See :mod:`skydiff.motion.interface` for the checks
and the dB transform applied before estimation.
"""

from __future__ import annotations

from .interface import DB_THRESHOLD, DB_ZEROVALUE, MotionMethod, estimate, estimate_batch, get_method, methods, register
from .fourdvar import FourDVarResult, LevelInfo, fourdvar, fourdvar_reference  # registers "4dvar" (alias "fourdvar")

__all__ = [
    "DB_THRESHOLD",
    "DB_ZEROVALUE",
    "FourDVarResult",
    "LevelInfo",
    "MotionMethod",
    "estimate",
    "estimate_batch",
    "fourdvar",
    "fourdvar_reference",
    "get_method",
    "methods",
    "register",
]
