"""SmaAt-UNet (Trebing, Stańczyk & Mehrkanoon, Pattern Recognition Letters 145:178, 2021; reference §4).

A U-Net whose convolutions are depthwise-separable (``kernels_per_layer=2``) with a CBAM attention module
(reduction 16) on every encoder level: the skip connections and the bottleneck carry the attention-weighted
features, while the next encoder level is computed from the un-attended features. Bilinear upsampling; with
the default ``base_channels=64, depth=4`` the encoder widths are 64-128-256-512-512 (the bottleneck is halved
because bilinear upsampling keeps the channel count) and the decoder 256-128-64-64.

It is a *direct* multi-output model: 12 input frames (1 h, as channels) -> ``n_out`` output frames. The
lead times of the outputs, in 5-min steps, are ``leadtime_steps``: by default ``(6,)`` (+30 min, the paper's
task) for ``n_out=1`` and ``1..n_out`` otherwise (e.g. the 12 -> 12 task of SpaT-SparK, reference §6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from .blocks import (
    CBAM,
    PAD_MODES,
    DoubleConvDS,
    NowcastModel,
    PaddedNet,
    _config_from_locals,
    get_scaler,
)
from .rainnet import _check_int
from .registry import register_model

__all__ = ["SmaAtUNet"]


class _Down(nn.Sequential):
    def __init__(self, cin: int, cout: int, kpl: int):
        super().__init__(nn.MaxPool2d(2), DoubleConvDS(cin, cout, kernels_per_layer=kpl))


class _Up(nn.Module):
    """Upsample x2, concatenate ``[skip, upsampled]``, DoubleConvDS."""

    def __init__(self, c_low: int, c_skip: int, cout: int, bilinear: bool, kpl: int):
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            cin = c_low + c_skip
            self.conv = DoubleConvDS(cin, cout, cin // 2, kernels_per_layer=kpl)
        else:
            self.up = nn.ConvTranspose2d(c_low, c_low // 2, 2, stride=2)
            self.conv = DoubleConvDS(c_low // 2 + c_skip, cout, kernels_per_layer=kpl)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(low)], dim=1))


class _SmaAtNet(PaddedNet):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int,
        depth: int,
        kernels_per_layer: int,
        reduction: int,
        bilinear: bool,
        pad_mode: str,
    ):
        super().__init__()
        self.depth = depth
        self.pad_mode = pad_mode
        factor = 2 if bilinear else 1
        c = [base_channels * 2**i for i in range(depth)] + [base_channels * 2**depth // factor]
        self.widths = c
        kpl = kernels_per_layer
        self.inc = DoubleConvDS(in_channels, c[0], kernels_per_layer=kpl)
        self.downs = nn.ModuleList(_Down(c[i], c[i + 1], kpl) for i in range(depth))
        self.cbams = nn.ModuleList(CBAM(ci, reduction) for ci in c)
        ups = []
        low = c[depth]
        for i in reversed(range(depth)):
            cout = c[i - 1] if (bilinear and i > 0) else c[i]
            ups.append(_Up(low, c[i], cout, bilinear, kpl))
            low = cout
        self.ups = nn.ModuleList(ups)
        self.outc = nn.Conv2d(c[0], out_channels, 1)
        # zero-initialised head: the network starts at "dry" (0 in SmaAt's space). With the default init its
        # first outputs are ~0.3 in a space where rain is 0.001-0.03 (R / 12 / 47.83): a short training run
        # (a few hundred steps) could not remove that noise (+-170 mm/h in the nowcasts, benchmarks/RESULTS.md §5)
        nn.init.zeros_(self.outc.weight)
        nn.init.zeros_(self.outc.bias)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inc(x)
        skips = [self.cbams[0](x)]
        for i, down in enumerate(self.downs):
            x = down(x)
            skips.append(self.cbams[i + 1](x))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.outc(y)


@register_model("smaat")
class SmaAtUNet(NowcastModel):
    """SmaAt-UNet: ``in_frames`` frames as channels -> ``n_out`` frames at lead times ``leadtime_steps``.

    Parameters
    ----------
    in_frames
        Input frames (default 12 = 1 h).
    n_out
        Output frames (default 1).
    base_channels, depth
        Width of the first level (default 64) and number of down-samplings (default 4).
    kernels_per_layer
        Depthwise filters per input channel (default 2).
    reduction
        CBAM channel-attention reduction (default 16; at least one hidden unit is kept).
    bilinear
        Bilinear upsampling (default, the paper's model) or transposed convolutions.
    scaler
        ``"smaat"`` (default): ``y = (R/12) / 47.83``, the NL-50 min-max normalisation (reference §4).
    leadtime_steps
        Lead time of each output channel in 5-min steps; default ``(6,)`` for ``n_out=1``, else ``1..n_out``.
    pad_mode
        ``"reflect"`` or ``"replicate"`` padding to a multiple of ``2**depth``.

    ``forward(x)``: (B, in_frames, H, W) transformed -> (B, n_out, H, W) transformed (not autoregressive).
    ``predict(frames, leadtimes)``: the first ``leadtimes`` output channels in mm/h
    (``leadtimes <= n_out``), i.e. lead times ``leadtime_steps[:leadtimes]``.
    """

    # measured on KNMI frames: the inputs are scaled to <= ~0.02, and the batch norm after the first
    # depthwise-separable convolution amplifies bfloat16 rounding to a ~280 % relative error of its output
    mixed_precision_refused = ("its normalised inputs (<= ~0.02) lose their variations in reduced precision and the "
                               "first batch norm amplifies the rounding (outputs off by ~0.4 mm/h on average)")
    model_name = "smaat"
    autoregressive = False

    def __init__(
        self,
        in_frames: int = 12,
        n_out: int = 1,
        base_channels: int = 64,
        depth: int = 4,
        kernels_per_layer: int = 2,
        reduction: int = 16,
        bilinear: bool = True,
        scaler: str = "smaat",
        leadtime_steps: Sequence[int] | None = None,
        pad_mode: str = "reflect",
    ):
        super().__init__()
        self.config = _config_from_locals(locals())
        for nm, v in (("in_frames", in_frames), ("n_out", n_out), ("base_channels", base_channels), ("depth", depth),
                      ("kernels_per_layer", kernels_per_layer), ("reduction", reduction)):
            _check_int(nm, v, 1)
        if bilinear and base_channels * 2**depth // 2 < 1:
            raise InputError("base_channels too small for bilinear upsampling")
        if pad_mode not in PAD_MODES:
            raise InputError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if leadtime_steps is None:
            leadtime_steps = (6,) if n_out == 1 else tuple(range(1, n_out + 1))
        leadtime_steps = tuple(int(s) for s in leadtime_steps)
        if len(leadtime_steps) != n_out or any(s < 1 for s in leadtime_steps):
            raise InputError(f"leadtime_steps must be {n_out} positive steps, got {leadtime_steps}")
        self.leadtime_steps = leadtime_steps
        self.n_input_frames = in_frames
        self.n_out = n_out
        self.scaler = get_scaler(scaler)
        self.net = _SmaAtNet(in_frames, n_out, base_channels, depth, kernels_per_layer, reduction, bilinear, pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_forward_input(x, self.n_input_frames, "transformed frames")
        return self.net(x)

    def _predict(self, x: torch.Tensor, leadtimes: int, **kwargs: Any) -> torch.Tensor:
        if kwargs:
            raise InputError(f"SmaAtUNet.predict got unexpected options {sorted(kwargs)}")
        self._check_direct_leadtimes(leadtimes)
        return self.inverse_transform(self(self.transform(x))[:, :leadtimes])
