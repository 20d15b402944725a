"""Motion estimation: a pysteps-style registry of optical-flow methods.

>>> import skydiff.motion as motion
>>> velocity = motion.estimate(frames, "lk")        # (2, H, W), pixels per time step, [0] = x, [1] = y
>>> motion.methods()
('constant', 'darts', 'farneback', 'lk', 'none', 'proesmans', 'vet')

Built-in methods wrap :mod:`pysteps.motion` (imported on first use); further methods (e.g. a differentiable
4D-Var estimate) are added with :func:`register`. See :mod:`skydiff.motion.interface` for the checks and the
dB transform applied before estimation.
"""

from __future__ import annotations

from .interface import DB_THRESHOLD, DB_ZEROVALUE, MotionMethod, estimate, get_method, methods, register

__all__ = [
    "DB_THRESHOLD",
    "DB_ZEROVALUE",
    "MotionMethod",
    "estimate",
    "get_method",
    "methods",
    "register",
]
