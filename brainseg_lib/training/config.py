"""``TrainConfig``: every setting that defines a training run (the paper's optimiser settings
by default); it is stored in each checkpoint and run JSON. ``TrainConfig.from_dict``, the way
parameters (a profile, a notebook's, a run's record) become a config, checks them against
``training.schema.TrainSchema`` first: types, ranges and choices, before any data is read.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields

from brainseg_lib.training.schema import TrainSchema, check

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the paper's optimiser settings."""
    image_size: int = 256
    base_width: int = 64
    epochs: int = 100
    batch_size: int = 50
    lr: float = 1e-4
    schedule: str = "none"           # none | onecycle | time_cosine
    warmup_frac: float = 0.05        # for onecycle / time_cosine
    weight_decay: float = 0.0
    loss: str = "bce_dice"           # bce | dice | bce_dice
    augment: bool = True
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | mps
    threads: int = 0                 # CPU threads; 0 = all cores
    amp: str = "auto"                # auto (bf16 on CUDA only) | off | bf16
    channels_last: bool = True
    deterministic: bool = True
    max_train_seconds: float | None = None   # experiments only: a cut run is never released
    snapshot_epochs: list[int] = field(default_factory=list)
    input_norm: str = "none"         # none | zscore | nyul_zscore (per image, inside the model)
    augment_level: str = "basic"     # see loaders.AUGMENT_LEVELS
    healthy_ratio: float = 0.0       # tumour-free scans per annotated TRAIN image
    healthy_seed: int = 0            # which splits/healthy_seed<k>.csv
    limit_train: int | None = None   # use only the first n images (smoke runs)
    limit_val: int | None = None
    threshold: float = 0.5
    ema_decay: float | None = None   # exponential moving average of weights (None = off)
    head_crop: bool = False          # each scan cropped to the head first (data.head_crop)
    small_tumour_oversample: int = 1  # TRAIN's smallest-quartile tumours drawn k times as often (loaders.oversample_pool)

    def __post_init__(self):
        """A number given as text becomes a number: YAML 1.1 (PyYAML, papermill) reads
        ``1e-3`` as a string, so ``lr: 1e-3`` in a profile or ``--set lr=1e-3`` would
        otherwise fail deep inside the optimiser. Text that is not a number is refused by name."""
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type).split(" |")[0]
            if kind in ("float", "int") and isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    number = math.nan
                if not math.isfinite(number) or (kind == "int" and not number.is_integer()):
                    raise ValueError(f"{f.name} must be a finite number ({kind}), not {value!r}")
                setattr(self, f.name, number if kind == "float" else int(number))

    @classmethod
    def from_dict(cls, d: dict, source: str = "training parameters") -> TrainConfig:
        """The config of parameters ``d``, after checking them against ``TrainSchema`` (a
        ValueError in one line naming ``source`` and each bad key); the values themselves go
        to the config as given (numbers written as text become numbers in __post_init__)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {sorted(unknown)}")
        check(TrainSchema, d, source)
        return cls(**d)

    def to_dict(self) -> dict:
        """Every setting, but a setting added after runs were recorded (``LATER_FIELDS``) only
        when it differs from its default, so those runs' records still describe their config."""
        d = asdict(self)
        return {k: v for k, v in d.items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}

    def stored(self) -> dict:
        """``to_dict`` as a run's JSON holds it (tuples as lists), for comparing with one."""
        return stored_config(self.to_dict())


# settings added after runs were recorded, with the default those runs had
LATER_FIELDS = {"head_crop": False, "small_tumour_oversample": 1}


def stored_config(config: dict) -> dict:
    """A config dict as a run's JSON or a checkpoint holds it, after a JSON round trip
    (tuples as lists), so two records of one config compare equal."""
    return json.loads(json.dumps(config))
