"""Tensors for training: a Dataset over cached uint8 arrays, batch augmentation, loaders.

The whole split lives in RAM as uint8; nothing is decoded per epoch. Train-time
augmentation runs on the batch as tensor operations (one ``grid_sample`` for
the affine part) and draws all randomness from a ``torch.Generator`` seeded by
``(seed, epoch)``, so a run, or a run resumed at any epoch, sees the same
batches. Evaluation loaders never augment and never shuffle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from brainseg_lib.data.cache import SplitArrays


@dataclass
class AugmentConfig:
    hflip: float = 0.5          # probability of a left-right flip
    vflip: float = 0.0          # probability of an up-down flip
    rotate_deg: float = 10.0    # uniform in [-r, r]
    scale: float = 0.10         # zoom factor uniform in [1-s, 1+s]
    translate: float = 0.05     # shift, fraction of the side, uniform in [-t, t]
    brightness: float = 0.10    # additive, uniform in [-b, b]
    contrast: float = 0.10      # multiplicative, uniform in [1-c, 1+c]
    gamma: float = 0.0          # x ** g with log(g) uniform in [-gamma, gamma] (0 = off)
    blur_p: float = 0.0         # probability of a Gaussian blur ...
    blur_sigma: float = 1.0     # ... with sigma uniform in [0.25, blur_sigma] pixels
    noise_p: float = 0.0        # probability of additive Gaussian noise ...
    noise_sd: float = 0.05      # ... with sd uniform in [0, noise_sd]
    hist_p: float = 0.0         # probability of a random histogram shift (``intensity.py``) ...
    hist_points: int = 6        # ... through this many control points ...
    hist_jitter: float = 0.6    # ... each moved by up to this share of their gap
    bias_p: float = 0.0         # probability of a smooth multiplicative bias field ...
    bias_coeff: float = 0.3     # ... exp(poly2) with coefficients uniform in [-c, c]
    invert_p: float = 0.0       # probability of inverting the intensities inside the head
    rot90_p: float = 0.0        # probability of a further rotation by 90, 180 or 270 degrees


# Named augmentation levels (the profile key ``augment_level``). ``basic`` is the original
# recipe: flips, small rotations, zoom, shift, brightness and contrast. ``full`` adds what a
# segmentation user expects against other scanners: up-down flips, wider rotations and
# zoom, gamma, blur and noise (measured lever by lever in results/tables/lever_table.md).
AUGMENT_LEVELS = {
    "basic": {},
    "full": {"vflip": 0.5, "rotate_deg": 20.0, "scale": 0.20, "translate": 0.08,
             "brightness": 0.15, "contrast": 0.25, "gamma": 0.4,
             "blur_p": 0.25, "blur_sigma": 1.2, "noise_p": 0.25, "noise_sd": 0.04},
    # ``full`` with zoom from 0.6 to 1.4: more small tumours (zoomed out) in training
    "full_zoom": {"vflip": 0.5, "rotate_deg": 20.0, "scale": 0.40, "translate": 0.10,
                  "brightness": 0.15, "contrast": 0.25, "gamma": 0.4,
                  "blur_p": 0.25, "blur_sigma": 1.2, "noise_p": 0.25, "noise_sd": 0.04},
    # ``full`` plus intensity changes that span MRI sequences (``intensity.py``): histogram
    # shift, bias field and inversion inside the head (issue 24's lever against other scanners)
    "mri": {"vflip": 0.5, "rotate_deg": 20.0, "scale": 0.20, "translate": 0.08,
            "brightness": 0.15, "contrast": 0.25, "gamma": 0.4,
            "blur_p": 0.25, "blur_sigma": 1.2, "noise_p": 0.25, "noise_sd": 0.04,
            "hist_p": 0.4, "bias_p": 0.3, "invert_p": 0.2},
}
# ``full`` plus quarter turns: Br35H is nearly all axial with the face up, other sets hold coronal
# and sagittal slices in any orientation (issue 24's orientation lever); ``mri`` plus the same turns
AUGMENT_LEVELS["full_orient"] = {**AUGMENT_LEVELS["full"], "rot90_p": 0.5}
AUGMENT_LEVELS["mri_orient"] = {**AUGMENT_LEVELS["mri"], "rot90_p": 0.5}


def augment_config(level: str) -> AugmentConfig:
    """The AugmentConfig of a named level (see AUGMENT_LEVELS)."""
    if level not in AUGMENT_LEVELS:
        raise ValueError(f"unknown augment_level {level!r}; choose one of {sorted(AUGMENT_LEVELS)}")
    return AugmentConfig(**AUGMENT_LEVELS[level])


class SegmentationDataset(Dataset):
    """(image, mask) pairs as uint8 tensors of shape (1, S, S)."""

    def __init__(self, arrays: SplitArrays):
        self.images = torch.from_numpy(arrays.images).unsqueeze(1)
        self.masks = torch.from_numpy(arrays.masks).unsqueeze(1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.masks[i]


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (the model's input scale)."""
    return images_u8.float().div_(255.0)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def augment_batch(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a float batch x (B,1,S,S in [0,1]) and its mask y (0/1) together."""
    b = x.shape[0]
    flip_h = torch.rand(b, generator=gen) < cfg.hflip
    flip_v = torch.rand(b, generator=gen) < cfg.vflip
    ang = _uniform(b, -cfg.rotate_deg, cfg.rotate_deg, gen) * (math.pi / 180)
    if cfg.rot90_p > 0:   # drawn only when enabled, so other levels replay their old batches
        on = torch.rand(b, generator=gen) < cfg.rot90_p
        turns = torch.randint(1, 4, (b,), generator=gen)
        ang = ang + torch.where(on, turns, 0).to(ang.dtype) * (math.pi / 2)
    zoom = _uniform(b, 1 - cfg.scale, 1 + cfg.scale, gen)
    tx = _uniform(b, -cfg.translate, cfg.translate, gen) * 2
    ty = _uniform(b, -cfg.translate, cfg.translate, gen) * 2
    bright = _uniform(b, -cfg.brightness, cfg.brightness, gen)
    contrast = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, gen)
    sx = torch.where(flip_h, -1.0, 1.0) / zoom
    sy = torch.where(flip_v, -1.0, 1.0) / zoom
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos * sx, -sin * sy, tx], 1),
                         torch.stack([sin * sx, cos * sy, ty], 1)], 1).to(x.device, x.dtype)
    bright, contrast = bright.to(x.device, x.dtype), contrast.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    both = F.grid_sample(torch.cat([x, y.to(x.dtype)], 1), grid, mode="bilinear",
                         padding_mode="zeros", align_corners=False)
    xa, ya = both[:, :1], (both[:, 1:] >= 0.5).to(y.dtype)
    mean = xa.mean(dim=(1, 2, 3), keepdim=True)
    xa = ((xa - mean) * contrast.view(b, 1, 1, 1) + mean + bright.view(b, 1, 1, 1)).clamp_(0, 1)
    # the levers below draw only when enabled, so the ``basic`` level replays its old batches
    if cfg.gamma > 0:
        g = torch.exp(_uniform(b, -cfg.gamma, cfg.gamma, gen)).to(x.device, x.dtype)
        xa = xa.clamp_min(1e-6).pow(g.view(b, 1, 1, 1))
    if cfg.blur_p > 0:
        on = torch.rand(b, generator=gen) < cfg.blur_p
        sigma = _uniform(b, 0.25, cfg.blur_sigma, gen)
        xa = torch.where(on.to(x.device).view(b, 1, 1, 1), gaussian_blur(xa, sigma.to(x.device)), xa)
    if cfg.noise_p > 0:
        on = (torch.rand(b, generator=gen) < cfg.noise_p).to(x.dtype)
        sd = _uniform(b, 0.0, cfg.noise_sd, gen) * on
        noise = torch.randn(xa.shape, generator=gen).to(x.device, x.dtype)
        xa = (xa + noise * sd.to(x.device, x.dtype).view(b, 1, 1, 1)).clamp_(0, 1)
    return sequence_intensity(xa, cfg, gen), ya


def sequence_intensity(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """The ``intensity.py`` transforms a level enables (each draws only when enabled)."""
    from brainseg_lib.data import intensity
    if cfg.hist_p > 0:
        x = intensity.histogram_shift(x, cfg.hist_p, cfg.hist_points, cfg.hist_jitter, gen)
    if cfg.bias_p > 0:
        x = intensity.bias_field(x, cfg.bias_p, cfg.bias_coeff, gen)
    if cfg.invert_p > 0:
        x = intensity.invert_head(x, cfg.invert_p, gen)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of a batch (B,1,H,W) with its own Gaussian sigma (B,), in pixels:
    one separable depthwise convolution, reflect-padded, kernel radius 3 sigma."""
    b = x.shape[0]
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma.to(x.dtype)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)                                   # (B, K)
    y = F.pad(x.reshape(1, b, *x.shape[-2:]), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(y, k.view(b, 1, -1, 1), groups=b)
    return y.reshape_as(x)


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, stream): resumable randomness."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 101 + stream) % (2**63))


class _Collate:
    def __init__(self, augment: AugmentConfig | None, gen: torch.Generator | None):
        self.augment, self.gen = augment, gen

    def __call__(self, batch):
        x = to_float(torch.stack([b[0] for b in batch]))
        y = torch.stack([b[1] for b in batch]).float()
        if self.augment is not None:
            x, y = augment_batch(x, y, self.augment, self.gen)
        return x, y


def make_loader(arrays: SplitArrays, batch_size: int, train: bool, seed: int = 0,
                epoch: int = 0, augment: AugmentConfig | None = None) -> DataLoader:
    """A DataLoader of float batches. ``train=True`` shuffles and (if given) augments,
    reproducibly for a given (seed, epoch); ``train=False`` does neither."""
    ds = SegmentationDataset(arrays)
    if not train:
        return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=_Collate(None, None))
    return DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=len(ds) > batch_size,
                      generator=epoch_generator(seed, epoch, 0),
                      collate_fn=_Collate(augment, epoch_generator(seed, epoch, 1)))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial one is dropped), or 1 when n <= batch_size;
    the rule ``make_loader(train=True)`` follows with ``drop_last``."""
    return n // batch_size if n > batch_size else 1


def resident_tensors(arrays: SplitArrays, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images and masks as uint8 tensors (N,1,S,S) on ``device``, the form
    ``resident_batches`` draws from."""
    return (torch.from_numpy(arrays.images).unsqueeze(1).to(device),
            torch.from_numpy(arrays.masks).unsqueeze(1).to(device))


def oversample_pool(masks, factor: int) -> torch.Tensor | None:
    """The indices an epoch draws from when small tumours are oversampled: every image once,
    and each tumour image whose tumour area (pixels of its mask at the model's size) is at or
    under the first quartile of the tumour images' areas ``factor - 1`` more times; None when
    ``factor`` is 1 (plain shuffling). Tumour-free images are never repeated."""
    if factor <= 1:
        return None
    area = torch.as_tensor(masks).reshape(len(masks), -1).gt(0).sum(1)
    tumour = area > 0
    if not bool(tumour.any()):
        return None
    cut = torch.quantile(area[tumour].double(), 0.25)
    small = torch.nonzero(tumour & (area.double() <= cut)).flatten()
    return torch.cat([torch.arange(len(masks)), small.repeat(factor - 1)])


def resident_batches(images: torch.Tensor, masks: torch.Tensor, batch_size: int, seed: int,
                     epoch: int, augment: AugmentConfig | None = None, pool: torch.Tensor | None = None):
    """Training batches drawn from uint8 tensors that already live on the training device
    (N,1,S,S), with no DataLoader and no host-to-device copy per step.

    The order and augmentation are exactly those of ``make_loader(train=True)`` for the
    same (seed, epoch): the same ``randperm`` from stream 0, the same draws from stream 1.
    With a ``pool`` (``oversample_pool``) an epoch is the first N of a shuffle of the pool:
    as many images as without it, small tumours more often (repeats get their own augmentation).
    """
    n = images.shape[0]
    g0 = epoch_generator(seed, epoch, 0)
    # a DataLoader iterator first draws its base seed from the generator, then the sampler
    # calls randperm with it; replaying both keeps batches identical to make_loader's
    # (a unit test compares the two, so a change in torch's DataLoader shows up there)
    torch.empty((), dtype=torch.int64).random_(generator=g0)
    if pool is None:
        perm = torch.randperm(n, generator=g0).to(images.device)
    else:
        perm = pool[torch.randperm(len(pool), generator=g0)][:n].to(images.device)
    gen = epoch_generator(seed, epoch, 1)
    for i in range(batches_per_epoch(n, batch_size)):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        x = to_float(images[idx])
        y = masks[idx].float()
        if augment is not None:
            x, y = augment_batch(x, y, augment, gen)
        yield x, y
