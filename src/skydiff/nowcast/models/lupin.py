"""LUPIN: fully differentiable Lagrangian CNN (Pavlík et al., arXiv 2402.10747).

Two RainNet-type U-Nets joined by the differentiable semi-Lagrangian operator :func:`skydiff.advect`:

1. **MF-U-Net** (``motion_net``): ``ln(R + 0.01)`` of the input frames -> motion field (B, 2, H, W) in pixels
   per 5-min step, ``[0] = x``, ``[1] = y``. RainNet U-Net with widths 8-16-32-64-128, dropout 0.5 at the two
   deepest levels, nearest upsampling, head Conv3x3 -> 2 then Conv1x1 2 -> 2, no output activation (§1 table).
   The 3x3 head is linear too (``head_activation=None``): a ReLU on a 2-channel bottleneck would confine the
   motion to a cone of directions.
2. **Lagrangian transform** (:func:`~skydiff.nowcast.models.blocks.lagrangian_stack`): input frame ``t-k`` is
   advected ``k`` unit steps forward along the (unblurred) motion, into the frame of the last observation
   ``t`` (§1 step 3). Inflow from outside the grid is dry.
3. **AF-U-Net** (``advection_net``): RainNet regression U-Net (widths 64...1024) on the ``T-1`` time
   differences of the Lagrangian stack (``differencing=True``, §1 step 4) -> the tendency (B, 1, H, W).
4. **Nowcast** = last observation advected one step along the *Gaussian-blurred* motion (σ = 127 px,
   kernel 255, §1 step 2) + tendency (§1 steps 5-6). Longer leads: autoregressive (the window is rolled and
   the prediction appended, detached — :meth:`rollout`; §1 "Autoregressive").

Optional optical-flow prior (``motion_prior="lk"``, a skydiff extension, not in the paper): the MF-U-Net then
predicts a *correction* to an optical-flow motion of the observed frames (pysteps' Lucas-Kanade), estimated once
per nowcast and kept for every lead time; the correction is trained end to end through the advection like the
motion itself. Built fresh, the MF-U-Net's output layer is zero, so the model starts from the optical flow.

Transform (``scaler``): the default ``"none"`` works in mm/h, the normalisation of LUPIN's stages 2 and 3
(§1 three-stage table); the MF-U-Net always sees ``ln(R + 0.01)`` (§1 forward pass step 1), computed from the
inverse-transformed input. ``"log"`` / ``"log_unit"`` are the other scalers of LUPIN's dataset.

Training helpers: :meth:`motion` (stage 1), :meth:`divergence_penalty` (the physics term β), :meth:`advect_frames`
(the "extra" term γ: each observed frame advected one step vs the next), :meth:`freeze_motion` (stage 2).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ...advection import advect
from ...errors import InputError
from ...operators import divergence_norm
from .blocks import LOG_OFFSET, NowcastModel, _config_from_locals, gaussian_blur, get_scaler, lagrangian_stack
from .rainnet import RainNetUNet, _check_int
from .registry import register_model

__all__ = ["LUPIN"]


DIVERGENCE_FORMS = ("squared", "sobel")  # LUPIN.divergence_penalty's forms (training.divergence)


@register_model("lupin")
class LUPIN(NowcastModel):
    """LUPIN (reference §1): MF-U-Net -> differentiable advection -> AF-U-Net, single step, autoregressive.

    Parameters
    ----------
    in_frames
        Input frames (default 6, §1 data).
    base_channels, depth, dropout
        AF-U-Net widths ``base_channels * 2**i`` (default 64 -> 64...1024), pooling depth, dropout.
    motion_base_channels, motion_depth, motion_dropout
        Same for the MF-U-Net (default 8 -> 8...128).
    motion_blur_sigma, motion_blur_size
        Gaussian blur of the motion used to extrapolate the last frame (default σ = 127 px, kernel 255; the blur
        is a normalised convolution, so kernels larger than the grid are fine). ``motion_blur_sigma=0`` turns
        it off.
    differencing
        Feed the AF-U-Net the ``in_frames - 1`` time differences of the Lagrangian stack (default) rather than
        the stack itself.
    n_iter, interp
        Passed to :func:`skydiff.advect` (midpoint iterations, ``"bilinear"``/``"bicubic"``).
    upsample, pad_mode
        U-Net upsampling (``"nearest"``) and padding (``"reflect"``), see :class:`RainNetUNet`.
    scaler
        Data transform of ``forward`` inputs/outputs: ``"none"`` (mm/h, default), ``"log"``, ``"log_unit"``.
    motion_prior, motion_prior_frames
        ``None`` (default, the paper's LUPIN) or an optical-flow method of :func:`skydiff.motion.estimate`
        (``"lk"``): the MF-U-Net's output is added to that flow of the last ``motion_prior_frames`` observed
        frames (default: the method's, 3 for LK), see the module docstring.
    motion_prior_kwargs
        Keyword arguments of the optical-flow method (e.g. ``{"grid_stride": 4}``: LK's dense interpolation on
        every 4th pixel, upsampled; 6x faster on a 560 x 560 grid, see :func:`skydiff.motion.estimate`).
    motion_correction
        ``False`` (only with ``motion_prior``): no MF-U-Net at all, the rain moves along the optical flow and only
        the AF-U-Net is learned (what a zero correction computes, without running the network).

    ``forward(x, return_motion=False, valid=None, prior=None)``: ``x`` (B, in_frames, H, W) transformed, oldest
    first -> (B, 1, H, W) transformed (and the motion (B, 2, H, W) with ``return_motion``); any H x W. ``valid``
    (B, 1, H, W): data mask for the motion blur (:meth:`extrapolate`); :meth:`predict` passes the pixels where
    some input frame has data. ``prior`` (B, 2, H, W) px/step: the optical-flow motion, required with
    ``motion_prior`` (:meth:`estimate_prior`; :meth:`predict` computes it) and refused without.
    """

    model_name = "lupin"
    autoregressive = True
    takes_valid_mask = True

    def __init__(
        self,
        in_frames: int = 6,
        base_channels: int = 64,
        depth: int = 4,
        dropout: float = 0.5,
        motion_base_channels: int = 8,
        motion_depth: int = 4,
        motion_dropout: float = 0.5,
        motion_blur_sigma: float = 127.0,
        motion_blur_size: int = 255,
        differencing: bool = True,
        n_iter: int = 1,
        interp: str = "bilinear",
        upsample: str = "nearest",
        scaler: str = "none",
        pad_mode: str = "reflect",
        motion_prior: str | None = None,
        motion_prior_frames: int | None = None,
        motion_correction: bool = True,
        motion_prior_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.config = _config_from_locals(locals())
        _check_int("in_frames", in_frames, 2)
        _check_int("motion_blur_size", motion_blur_size, 1)
        if not float(motion_blur_sigma) >= 0:
            raise InputError(f"motion_blur_sigma must be >= 0, got {motion_blur_sigma!r}")
        if interp not in ("bilinear", "bicubic"):
            raise InputError(f"interp must be 'bilinear' or 'bicubic', got {interp!r}")
        self.n_input_frames = in_frames
        self.scaler = get_scaler(scaler)
        if self.scaler.name not in ("none", "log", "log_unit"):
            raise InputError(f"LUPIN scaler must be 'none', 'log' or 'log_unit', got {scaler!r}")
        self.differencing = bool(differencing)
        self.n_iter = n_iter
        self.interp = interp
        self.motion_blur_sigma = float(motion_blur_sigma)
        self.motion_blur_size = motion_blur_size
        if not motion_correction and not motion_prior:
            raise InputError("motion_correction=False needs a motion_prior (the motion must come from somewhere)")
        self.motion_net = RainNetUNet(
            in_frames, 2, motion_base_channels, motion_depth, motion_dropout, upsample,
            head_channels=2, head_activation=None, pad_mode=pad_mode,
        ) if motion_correction else None
        n_af = in_frames - 1 if self.differencing else in_frames
        self.advection_net = RainNetUNet(n_af, 1, base_channels, depth, dropout, upsample, pad_mode=pad_mode)
        self._motion_frozen = False
        self.motion_prior = None
        self.motion_prior_frames = 0
        if motion_prior:
            from ...motion import get_method
            from ..interface import default_motion_frames

            self.motion_prior = get_method(str(motion_prior)).name  # InputError for an unknown method
            k = default_motion_frames(self.motion_prior) if motion_prior_frames is None else motion_prior_frames
            _check_int("motion_prior_frames", k, 2)
            if k > in_frames:
                raise InputError(f"motion_prior_frames={k} exceeds in_frames={in_frames}")
            self.motion_prior_frames = int(k)
            if self.motion_net is not None:
                head = [m for m in self.motion_net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
                torch.nn.init.zeros_(head.weight)  # start from the prior: a zero correction
                if head.bias is not None:
                    torch.nn.init.zeros_(head.bias)
        elif motion_prior_frames is not None or motion_prior_kwargs:
            raise InputError("motion_prior_frames / motion_prior_kwargs are for motion_prior (an optical-flow "
                             "method), which is not set")
        if motion_prior_kwargs is not None and not isinstance(motion_prior_kwargs, dict):
            raise InputError(f"motion_prior_kwargs must be a dict, got {type(motion_prior_kwargs).__name__}")
        self.motion_prior_kwargs = dict(motion_prior_kwargs or {})

    # --- components ---------------------------------------------------------------------------------------

    def motion(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """MF-U-Net: transformed frames (B, in_frames, H, W) -> motion (B, 2, H, W) in pixels per step
        (with ``motion_prior``: ``prior`` + the network's correction)."""
        self._check_forward_input(x, self.n_input_frames, "transformed frames")
        if self.motion_prior is None:
            if prior is not None:
                raise InputError("this LUPIN has no motion_prior; do not pass prior=")
            return self.motion_net(torch.log(self.inverse_transform(x) + LOG_OFFSET))
        what = "" if self.motion_net is None else " + a learned correction"
        if prior is None:
            raise InputError(f"this LUPIN's motion is a {self.motion_prior!r} flow{what}: pass prior= "
                             "(LUPIN.estimate_prior(frames)), or use predict(), which computes it")
        shape = (x.shape[0], 2, *x.shape[-2:])
        if tuple(prior.shape) != shape:
            raise InputError(f"prior must be {shape} (B, 2, H, W) px/step, got {tuple(prior.shape)}")
        prior = prior.to(device=x.device, dtype=x.dtype)
        if self.motion_net is None:  # motion_correction=False: the flow is the motion
            return prior
        return self.motion_net(torch.log(self.inverse_transform(x) + LOG_OFFSET)) + prior

    def estimate_prior(self, frames: torch.Tensor) -> torch.Tensor:
        """The optical-flow prior of frames (B, T, H, W) in mm/h (NaN-free): (B, 2, H, W) px/step, no gradient."""
        if self.motion_prior is None:
            raise InputError("this LUPIN has no motion_prior")
        from ...motion import estimate_batch

        with warnings.catch_warnings():  # pysteps' LK warns on sparse features; the flow is still returned
            warnings.simplefilter("ignore")
            return estimate_batch(frames.float(), self.motion_prior, self.motion_prior_frames,
                                  **self.motion_prior_kwargs).to(frames.dtype)

    def lagrangian(self, x: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, H, W) moved into the Lagrangian frame of the last one (frame t-k advected k steps)."""
        return lagrangian_stack(x, motion, n_iter=self.n_iter, interp=self.interp, outval=self.dry_value)

    def advect_frames(self, frames: torch.Tensor, motion: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """Each frame of (B, T, H, W) advected ``steps`` unit steps: (B, T, H, W) (dry inflow)."""
        out = advect(frames, motion, int(steps), n_iter=self.n_iter, interp=self.interp, outval=self.dry_value)
        return out[:, -1]

    def extrapolate(self, last: torch.Tensor, motion: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Last frame (B, 1, H, W) advected one step along the Gaussian-blurred motion (§1 step 2).

        ``valid`` (B, 1, H, W), optional: 1 where there is data; the blur then averages the motion over the
        pixels with data only (the MF-U-Net's motion over zero-filled no-data areas is not a motion estimate).
        """
        smooth = gaussian_blur(motion, self.motion_blur_sigma, self.motion_blur_size, weight=valid)
        return advect(last, smooth, 1, n_iter=self.n_iter, interp=self.interp, outval=self.dry_value)[:, 0]

    def forward(self, x: torch.Tensor, return_motion: bool = False, valid: torch.Tensor | None = None,
                prior: torch.Tensor | None = None) -> Any:
        self._check_forward_input(x, self.n_input_frames, "transformed frames")
        if self._motion_frozen:
            with torch.no_grad():
                mf = self.motion(x, prior)
        else:
            mf = self.motion(x, prior)
        lag = self.lagrangian(x, mf)
        inp = lag[:, 1:] - lag[:, :-1] if self.differencing else lag
        y = self.extrapolate(x[:, -1:], mf, valid) + self.advection_net(inp)
        return (y, mf) if return_motion else y

    def _flow_spec(self, kwargs: dict[str, Any]) -> tuple[str, int, dict[str, Any], str | None] | None:
        if self.motion_prior is None or kwargs.get("velocity") is not None:
            return None
        return self.motion_prior, self.motion_prior_frames, self.motion_prior_kwargs, None

    def _predict(self, x: torch.Tensor, leadtimes: int, valid: torch.Tensor | None = None,
                 velocity: Any = None, **kwargs: Any) -> Any:
        """``velocity`` (2, H, W) or (B, 2, H, W) px/step, only with ``motion_prior``: a motion of the caller's
        (e.g. 4D-Var) used instead of estimating the optical flow."""
        if self.motion_prior is None:
            if velocity is not None:
                raise InputError("this LUPIN learns its own motion; velocity= is for a LUPIN with a motion_prior "
                                 "(the shipped one)")
            return super()._predict(x, leadtimes, valid=valid, **kwargs)
        if kwargs:
            raise InputError(f"LUPIN.predict got unexpected options {sorted(kwargs)}")
        # once, from the observed frames (or the caller's); kept for every lead
        prior = self.estimate_prior(x) if velocity is None else self._velocity(velocity, x)
        z = self.transform(x)
        y = self.rollout(z, leadtimes, clamp=True, valid=valid, prior=prior)
        # the motion of predict(..., return_motion=True): the prior, plus the learned correction where there is one
        # (that of the first lead: later leads correct the prior from their own input window)
        motion = prior if self.motion_net is None else self.motion(z, prior)
        return self.inverse_transform(y), motion

    # --- training helpers ---------------------------------------------------------------------------------

    @staticmethod
    def divergence_penalty(motion: torch.Tensor, boundary: str = "extrapolate", form: str = "squared") -> torch.Tensor:
        """The divergence penalty of a motion field (B, 2, H, W), a 0-d tensor; multiply by the trainer's β.

        ``form="squared"`` (default): ``mean((du/dx + dv/dy)^2)`` with centred differences
        (:func:`skydiff.operators.divergence_norm`, ``boundary`` at the edges), smooth at zero.
        ``form="sobel"``: LUPIN's code (reference §1 losses): ``sum |du/dx + dv/dy| / (B H W)`` with unnormalised
        3x3 Sobel kernels (8x centred differences) over the interior (a valid convolution). For motions of a few
        px per step the two differ by two orders of magnitude (a KNMI crop with 8 px/step LK motion: 1.1e-3
        against 0.14), so the same β weighs the penalty far less in the squared form.
        """
        if form == "squared":
            return divergence_norm(motion, reduction="mean", boundary=boundary).mean()
        if form not in DIVERGENCE_FORMS:
            raise InputError(f"divergence form must be 'squared' or 'sobel', got {form!r}")
        if motion.ndim != 4 or motion.shape[1] != 2 or min(motion.shape[-2:]) < 3:
            raise InputError(f"motion must be (B, 2, H, W) with H, W >= 3, got {tuple(motion.shape)}")
        kx = motion.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        weight = torch.stack([kx, kx.t()])[:, None]  # d/dx of u (columns), d/dy of v (rows)
        div = torch.nn.functional.conv2d(motion, weight, groups=2).sum(1)
        b, _, h, w = motion.shape
        return div.abs().sum() / (b * h * w)

    def freeze_motion(self, frozen: bool = True) -> "LUPIN":
        """Freeze (stage 2) or unfreeze (stage 3) the MF-U-Net: no gradients, eval mode (no dropout)."""
        self._motion_frozen = bool(frozen)
        if self.motion_net is not None:
            for p in self.motion_net.parameters():
                p.requires_grad_(not frozen)
            self.motion_net.train(self.training and not frozen)
        return self

    @property
    def motion_frozen(self) -> bool:
        return self._motion_frozen

    def train(self, mode: bool = True) -> "LUPIN":
        super().train(mode)
        if self._motion_frozen and self.motion_net is not None:
            self.motion_net.eval()
        return self
