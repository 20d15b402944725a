"""RainNet (Ayzel, Scheffer & Heistermann, GMD 13:2631, 2020).

:class:`RainNetUNet` is the bare U-Net, also used by LUPIN (MF-U-Net and AF-U-Net, §1) and L-CNN (§2);
:class:`RainNet` is the nowcasting model (4 frames -> the next frame, autoregressive).

Architecture (default ``base_channels=64, depth=4``, the original): encoder levels of two 3x3 conv + ReLU with
64-128-256-512 filters, each followed by 2x2 max-pooling, a 1024-filter bottleneck; dropout 0.5 after the
deepest encoder level (on the pooled path only: the skip connection takes the pre-dropout features, as in the
Keras code) and after the bottleneck; decoder of 2x nearest upsampling, concatenation ``[upsampled, skip]`` and
two 3x3 conv + ReLU with 512-256-128-64 filters; head 3x3 conv to 2 channels + ReLU and a linear 1x1 conv to
the output. 20 convolutions, 31.4 M parameters with 4 inputs (§3). He-normal initialisation, zero biases.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...errors import check_int as _check_int  # noqa: F401  (also used by the other models)
from .blocks import PAD_MODES, DoubleConv, NowcastModel, PaddedNet, _config_from_locals, get_scaler
from .registry import register_model

__all__ = ["RainNetUNet", "RainNet"]


class RainNetUNet(PaddedNet):
    """The RainNet U-Net on any grid: (B, in_channels, H, W) -> (B, out_channels, H, W).

    Parameters
    ----------
    in_channels, out_channels
        Input and output channels.
    base_channels
        Filters of the first level; level ``i`` has ``base_channels * 2**i`` (default 64 -> 64 ... 1024).
    depth
        Number of max-pooling steps (default 4); inputs are padded to a multiple of ``2**depth``.
    dropout
        Dropout rate after the deepest encoder level and the bottleneck (default 0.5).
    upsample
        ``"nearest"`` (Keras ``UpSampling2D``, default) or ``"bilinear"``.
    head_channels
        Channels of the 3x3 head convolution before the final 1x1 one (default 2).
    head_activation
        ``"relu"`` (RainNet) or ``None`` (linear head, used for motion fields).
    pad_mode
        ``"reflect"`` (default) or ``"replicate"``, see :func:`~skydiff.nowcast.models.blocks.pad_to_multiple`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        base_channels: int = 64,
        depth: int = 4,
        dropout: float = 0.5,
        upsample: str = "nearest",
        head_channels: int = 2,
        head_activation: str | None = "relu",
        pad_mode: str = "reflect",
    ):
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("out_channels", out_channels, 1)
        _check_int("base_channels", base_channels, 1)
        _check_int("depth", depth, 1)
        _check_int("head_channels", head_channels, 1)
        if not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout!r}")
        if upsample not in ("nearest", "bilinear"):
            raise InputError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        if head_activation not in ("relu", None):
            raise InputError(f"head_activation must be 'relu' or None, got {head_activation!r}")
        if pad_mode not in PAD_MODES:
            raise InputError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.depth = depth
        self.pad_mode = pad_mode
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.widths = widths
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoder.append(DoubleConv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1])
        self.drop_deep = nn.Dropout(dropout)
        self.drop_bottleneck = nn.Dropout(dropout)
        extra = {"align_corners": False} if upsample == "bilinear" else {}
        self.up = nn.Upsample(scale_factor=2, mode=upsample, **extra)
        self.decoder = nn.ModuleList(DoubleConv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], head_channels, 3, padding=1)
        self.head_act = nn.ReLU(inplace=True) if head_activation == "relu" else nn.Identity()
        self.out = nn.Conv2d(head_channels, out_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan-in) weights and zero biases, as Keras ``he_normal`` in RainNet (§3)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoder):
            x = enc(x)
            skips.append(x)
            if i == self.depth - 1:
                x = self.drop_deep(x)
            x = self.pool(x)
        x = self.drop_bottleneck(self.bottleneck(x))
        for dec, skip in zip(self.decoder, reversed(skips)):
            x = dec(torch.cat([self.up(x), skip], dim=1))
        return self.out(self.head_act(self.head(x)))


@register_model("rainnet")
class RainNet(NowcastModel):
    """RainNet: ``in_frames`` past frames (as channels) -> the next frame; longer leads autoregressively.

    Reference §3: 4 inputs (t-15, t-10, t-5, t) -> +5 min, recursive to longer leads; filters 64...1024,
    dropout 0.5 at levels 4 and 5, linear output, transform ``ln(x + 0.01)`` with ``x`` the 5-min depth in mm
    (scaler ``"rainnet"``: ``y = ln(R/12 + 0.01)`` for R in mm/h); the logcosh loss is the trainer's concern.

    ``forward(x)``: ``x`` (B, in_frames, H, W) transformed, oldest first -> (B, 1, H, W) transformed, any H x W.
    ``predict(frames, leadtimes)``: mm/h in and out, see :meth:`NowcastModel.predict`.
    """

    model_name = "rainnet"
    autoregressive = True

    def __init__(
        self,
        in_frames: int = 4,
        base_channels: int = 64,
        depth: int = 4,
        dropout: float = 0.5,
        upsample: str = "nearest",
        scaler: str = "rainnet",
        pad_mode: str = "reflect",
    ):
        super().__init__()
        self.config = _config_from_locals(locals())
        _check_int("in_frames", in_frames, 1)
        self.n_input_frames = in_frames
        self.scaler = get_scaler(scaler)
        self.net = RainNetUNet(in_frames, 1, base_channels, depth, dropout, upsample, pad_mode=pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_forward_input(x, self.n_input_frames, "transformed frames")
        return self.net(x)
