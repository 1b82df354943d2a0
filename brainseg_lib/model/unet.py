"""The paper's U-Net (Khadra et al. 2026, Sec. III-B/C).

Four encoder levels and four decoder levels around a bottleneck. Every level is
two 3x3 convolutions (padding 1), each followed by BatchNorm2d and ReLU.
Down-sampling is 2x2 max-pooling, up-sampling is a 2x2 ConvTranspose2d with
stride 2, skip connections concatenate encoder features into the decoder, and a
1x1 convolution gives one logit channel. No pretrained weights.

**Input normalisation** (``input_norm``, part of the model so that every caller,
``predict`` and exported copies included, applies it the same way):

* ``none``: the image in [0, 1] (uint8 / 255) goes in as it is (the paper's setting);
* ``zscore``: each image is standardised by its own mean and standard deviation over
  all its pixels, ``(x - mean) / (sd + 1e-6)``. A scan's overall brightness and
  contrast, which differ between scanners and JPEG exports, then no longer reach the
  network. It has no parameters and is computed in float32.
* ``nyul_zscore``: each image's head histogram is first mapped onto the model's
  ``reference`` percentiles (``model.histogram_norm``, a buffer set from the scans it
  trains on when it is built for training and saved with its weights), then z-scored as
  above. In training mode only the z-score is applied: the training loop standardises
  the scans before augmenting them (see ``model.histogram_norm``).

With ``base=64`` this is the classic U-Net of Ronneberger et al. (widths
64-128-256-512, bottleneck 1024, 31,042,369 parameters for one input channel:
the convolutions keep their bias, as a plain 3x3 convolution does).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DEPTH = 4  # encoder levels == decoder levels, as in the paper
INPUT_NORMS = ("none", "zscore", "nyul_zscore")
NEEDS_REFERENCE = ("nyul_zscore",)     # the input norms that hold reference percentiles


def normalize_input(x: torch.Tensor, mode: str, reference: torch.Tensor | None = None,
                    training: bool = False) -> torch.Tensor:
    """Per-image intensity normalisation of a batch (B, C, H, W); see the module docstring."""
    if mode == "none":
        return x
    if mode == "nyul_zscore" and training:     # the scans were standardised before augmentation
        return normalize_input(x, "zscore")
    if mode == "nyul_zscore":
        from brainseg_lib.model.histogram_norm import standardise_head
        return normalize_input(standardise_head(x, reference), "zscore")
    if mode == "zscore":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        sd = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (x - mean) / (sd + 1e-6)
    raise ValueError(f"unknown input_norm {mode!r}; choose one of {INPUT_NORMS}")


class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm2d, ReLU) x 2: one U-Net level."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with ``DEPTH`` encoder and decoder levels and one output logit."""

    def __init__(self, in_channels: int = 1, base: int = 64, out_channels: int = 1,
                 input_norm: str = "none", reference=None):
        super().__init__()
        if base < 1:
            raise ValueError(f"base width must be >= 1, got {base}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {input_norm!r}; choose one of {INPUT_NORMS}")
        self.in_channels, self.base, self.out_channels = in_channels, base, out_channels
        self.input_norm = input_norm
        if input_norm in NEEDS_REFERENCE:   # zeros until given, or filled by load_state_dict
            from brainseg_lib.data.standardize import LEVELS
            ref = torch.zeros(len(LEVELS)) if reference is None else torch.as_tensor(reference, dtype=torch.float32)
            if ref.shape != (len(LEVELS),):
                raise ValueError(f"input_norm {input_norm!r} takes {len(LEVELS)} reference percentiles, "
                                 f"got shape {tuple(ref.shape)}")
            self.register_buffer("reference", ref.clone())
        widths = [base * 2**i for i in range(DEPTH + 1)]  # e.g. 64..1024
        self.encoders = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.encoders.append(DoubleConv(c, w))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1])
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w_hi, w in zip(widths[:0:-1], widths[-2::-1]):
            self.upsamples.append(nn.ConvTranspose2d(w_hi, w, 2, stride=2))
            self.decoders.append(DoubleConv(2 * w, w))
        self.head = nn.Conv2d(base, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2**DEPTH or w % 2**DEPTH:
            raise ValueError(
                f"U-Net input sides must be multiples of {2**DEPTH}; got {h}x{w}. "
                "Resize the image (brainseg_lib.data resizes to the profile's image_size)."
            )
        x = normalize_input(x, self.input_norm, getattr(self, "reference", None), self.training)
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.upsamples, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def config(self) -> dict:
        """The architecture arguments, stored in checkpoints and checked on load."""
        return {"in_channels": self.in_channels, "base": self.base,
                "out_channels": self.out_channels, "depth": DEPTH, "input_norm": self.input_norm}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class LevelInfo:
    """One row of the architecture description used for Fig. 2."""
    stage: str          # "encoder 1".."encoder 4", "bottleneck", "decoder 4".."decoder 1", "head"
    channels: int
    height: int
    width: int
    parameters: int


def describe(model: UNet, image_size: int) -> list[LevelInfo]:
    """Trace one forward pass and report each level's output shape and parameters.

    Shapes come from real tensors flowing through ``model``, not from arithmetic,
    so the figure drawn from this is the architecture that was trained.
    """
    rows: list[LevelInfo] = []
    hooks = []

    def record(name, module):
        def hook(_m, _inp, out):
            rows.append(LevelInfo(name, out.shape[1], out.shape[2], out.shape[3],
                                  count_parameters(module)))
        return module.register_forward_hook(hook)

    for i, enc in enumerate(model.encoders, 1):
        hooks.append(record(f"encoder {i}", enc))
    hooks.append(record("bottleneck", model.bottleneck))
    for i, dec in enumerate(model.decoders):
        hooks.append(record(f"decoder {DEPTH - i}", dec))
    hooks.append(record("head", model.head))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, model.in_channels, image_size, image_size,
                              device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    # the up-convolutions' parameters belong to their decoder level
    for i, up in enumerate(model.upsamples):
        rows[DEPTH + 1 + i].parameters += count_parameters(up)
    return rows
