"""L-CNN: RainNet on differenced Lagrangian fields (Ritvanen et al., IEEE JSTARS 16:1654, 2023; reference §2).

Pipeline of :meth:`LCNN.predict` (the network itself, :meth:`LCNN.forward`, only sees step 3):

1. **Motion**: one steady field per sample from optical flow, ``skydiff.motion.estimate(frames, "lk")``
   (pysteps Lucas-Kanade on the last ``motion_frames = 4`` frames, §2 step 1), computed on the CPU with numpy;
   or a ``velocity`` given by the caller.
2. **Lagrangian transform**: rain below ``rain_threshold = 0.1`` mm/h is set to 0 (§2 threshold), then input
   frame ``t-k`` is advected ``k`` steps forward into the frame of the last observation ``t``
   (:func:`~skydiff.nowcast.models.blocks.lagrangian_stack`, cubic interpolation as the reference's
   extrapolation, dry inflow), transformed by ``scaler`` (``"none"``: mm/h, the reference config) and
   differenced in time: ``in_frames = 5`` frames give 4 differences (§2 config).
3. **Network**: RainNet U-Net (:class:`~skydiff.nowcast.models.rainnet.RainNetUNet`), 4 differences -> the next
   Lagrangian difference; autoregressive over lead times (the raw predicted differences are fed back).
4. **Back to Eulerian**: Lagrangian field at lead ``n`` = last Lagrangian field + cumulative sum of the predicted
   differences (clamped at 0 mm/h), then advected ``n`` steps along the same motion (§2 step 3).
"""

from __future__ import annotations

from typing import Any

import torch

from ...advection import advect
from ...errors import InputError
from .blocks import NowcastModel, _config_from_locals, get_scaler, lagrangian_stack
from .rainnet import RainNetUNet, _check_int
from .registry import register_model

__all__ = ["LCNN"]


@register_model("lcnn")
class LCNN(NowcastModel):
    """L-CNN (reference §2): RainNet on ``in_frames - 1`` differences of Lagrangian fields.

    Parameters
    ----------
    in_frames
        Observed frames used (default 5, giving 4 differences).
    base_channels, depth, dropout, upsample, pad_mode
        RainNet U-Net options (defaults: the original RainNet, 64...1024 filters).
    motion_method, motion_frames
        Optical-flow method for :func:`skydiff.motion.estimate` (default ``"lk"``) and how many of the most
        recent frames it sees (default 4).
    interp, n_iter
        Interpolation and midpoint iterations of the Lagrangian transforms (:func:`skydiff.advect`);
        ``"bicubic"`` by default (the reference's cubic extrapolation).
    rain_threshold
        Rain rates below this (mm/h) are set to 0 before the Lagrangian transform (default 0.1).
    scaler
        Space of the differences: ``"none"`` (mm/h, default), ``"log"`` or ``"log_unit"``.

    ``forward(d)``: ``d`` (B, in_frames - 1, H, W) time differences of transformed Lagrangian fields, oldest
    first -> (B, 1, H, W) the next difference; any H x W. Build ``d`` with :meth:`lagrangian_inputs`.
    ``predict(frames, leadtimes, velocity=None, motion_kwargs=None)``: mm/h in and out.
    """

    model_name = "lcnn"
    autoregressive = True

    def __init__(
        self,
        in_frames: int = 5,
        base_channels: int = 64,
        depth: int = 4,
        dropout: float = 0.5,
        upsample: str = "nearest",
        motion_method: str = "lk",
        motion_frames: int = 4,
        interp: str = "bicubic",
        n_iter: int = 1,
        rain_threshold: float = 0.1,
        scaler: str = "none",
        pad_mode: str = "reflect",
    ):
        super().__init__()
        self.config = _config_from_locals(locals())
        _check_int("in_frames", in_frames, 2)
        _check_int("motion_frames", motion_frames, 2)
        if interp not in ("bilinear", "bicubic"):
            raise InputError(f"interp must be 'bilinear' or 'bicubic', got {interp!r}")
        if not float(rain_threshold) >= 0:
            raise InputError(f"rain_threshold must be >= 0, got {rain_threshold!r}")
        self.n_input_frames = in_frames
        self.scaler = get_scaler(scaler)
        if self.scaler.name not in ("none", "log", "log_unit"):
            raise InputError(f"LCNN scaler must be 'none', 'log' or 'log_unit', got {scaler!r}")
        self.motion_method = motion_method
        self.motion_frames = motion_frames
        self.interp = interp
        self.n_iter = n_iter
        self.rain_threshold = float(rain_threshold)
        self.net = RainNetUNet(in_frames - 1, 1, base_channels, depth, dropout, upsample, pad_mode=pad_mode)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        self._check_forward_input(d, self.n_input_frames - 1, "Lagrangian differences")
        return self.net(d)

    def _feedback(self, y: torch.Tensor) -> torch.Tensor:
        return y  # differences may be negative

    # --- pre- and post-processing -------------------------------------------------------------------------

    def estimate_motion(self, frames: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Optical flow per sample: frames (B, T, H, W) mm/h -> (B, 2, H, W) px/step on the frames' device.

        Runs :func:`skydiff.motion.estimate` (``self.motion_method``) on the CPU on the last
        ``self.motion_frames`` frames; ``kwargs`` go to the method.
        """
        from ...motion import estimate_batch

        return estimate_batch(frames, self.motion_method, self.motion_frames, **kwargs)

    def lagrangian_inputs(self, frames: torch.Tensor, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network inputs from NaN-free frames (B, T, H, W) in mm/h and motion (B, 2, H, W).

        Returns ``(d, last)``: the ``T - 1`` time differences of the transformed Lagrangian fields (B, T-1, H, W)
        and the transformed last field (B, 1, H, W), from which :meth:`predict` accumulates the forecast.
        """
        x = torch.where(frames < self.rain_threshold, torch.zeros_like(frames), frames)
        lag = lagrangian_stack(x, velocity, n_iter=self.n_iter, interp=self.interp, outval=0.0).clamp_min(0.0)
        z = self.transform(lag)
        return z[:, 1:] - z[:, :-1], z[:, -1:]

    def to_eulerian(self, fields: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        """Lagrangian forecasts (B, L, H, W) in mm/h -> Eulerian: field ``n`` (1-based) advected ``n`` steps."""
        out = [
            advect(fields[:, n - 1 : n], velocity, n, n_iter=self.n_iter, interp=self.interp, outval=0.0)[:, -1]
            for n in range(1, fields.shape[1] + 1)
        ]
        return torch.cat(out, dim=1)

    def _flow_spec(self, kwargs: dict[str, Any]) -> tuple[str, int, dict[str, Any], str | None] | None:
        if kwargs.get("velocity") is not None:
            return None
        return self.motion_method, self.motion_frames, dict(kwargs.get("motion_kwargs") or {}), "motion_kwargs"

    def _predict(
        self,
        x: torch.Tensor,
        leadtimes: int,
        velocity: Any = None,
        motion_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if kwargs:
            raise InputError(f"LCNN.predict got unexpected options {sorted(kwargs)}; use velocity, motion_kwargs")
        v = self.estimate_motion(x, **(motion_kwargs or {})) if velocity is None else self._velocity(velocity, x)
        d, last = self.lagrangian_inputs(x, v)
        dpred = self.rollout(d, leadtimes)
        lag = self.inverse_transform(last + torch.cumsum(dpred, dim=1))
        return self.to_eulerian(lag, v), v  # (the motion: predict(..., return_motion=True))
