"""The schema of the training parameters (every ``TrainConfig`` field), checked before any work.

``TrainSchema`` is a pydantic model in strict mode: a bool is not an integer, a quoted
``"false"`` is text and not a boolean, a list must be a list (or a tuple, which only code can
give), an unknown key is refused. The one loosening: YAML 1.1 (PyYAML, papermill) reads
``1e-3`` as the text ``"1e-3"``, so a numeric field also takes text that parses as a finite
number (a whole one for an integer field).
Ranges and choices are those the code accepts:

* ``image_size`` a multiple of 16 (the U-Net halves it ``DEPTH`` = 4 times) within the
  checkpoint bounds ``IMAGE_SIZE_RANGE``; ``base_width`` within the checkpoint bounds;
* ``epochs``, ``batch_size`` >= 1; ``threads`` >= 1, or 0 for all cores; seeds >= 0;
* ``lr`` finite and > 0; ``threshold`` and ``ema_decay`` in (0, 1); ``warmup_frac`` in
  [0, 1); ``weight_decay``, ``healthy_ratio`` >= 0; ``max_train_seconds`` None or > 0;
* ``limit_train``, ``limit_val`` None (every image) or >= 1: a limit of 0 leaves nothing to
  train or validate on, and a negative one would cut images off the end;
* ``schedule``, ``loss``, ``amp``, ``device``, ``input_norm``, ``augment_level`` one of the
  names the code knows; ``schedule: time_cosine`` needs ``max_train_seconds``.

Every field is optional and defaults are never checked, so a partial set (one profile file,
one ``--set``) is checked key by key. ``check`` raises ValueError in one line naming the
source and every bad key.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from brainseg_lib.data.loaders import AUGMENT_LEVELS
from brainseg_lib.model.checkpoint import IMAGE_SIZE_RANGE, MODEL_CONFIG_SCHEMA
from brainseg_lib.model.unet import DEPTH, INPUT_NORMS
from brainseg_lib.training.losses import LOSSES

SCHEDULES = ("none", "onecycle", "time_cosine")     # training.schedule.lr_factor
AMP_MODES = ("auto", "off", "bf16")                 # training.engine.autocast_dtype
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")
STRIDE = 2 ** DEPTH


def _number_from_text(kind: type):
    """A BeforeValidator: text that parses as a finite number becomes that number (``kind``)."""
    def convert(value):
        if not isinstance(value, str):
            return value
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"must be a number, not the text {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, not {value!r}")
        if kind is int and not number.is_integer():
            raise ValueError(f"must be a whole number, not {value!r}")
        return kind(number)
    return BeforeValidator(convert)


def _multiple_of_stride(size: int) -> int:
    if size % STRIDE:
        raise ValueError(f"must be a multiple of {STRIDE} (the U-Net halves it {DEPTH} times), not {size}")
    return size


def _device_name(name: str) -> str:
    if not DEVICE_RE.fullmatch(name):
        raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps, not {name!r}")
    return name


# a list field also takes a tuple (code builds some, e.g. the sweep); YAML gives lists only
TUPLE_AS_LIST = BeforeValidator(lambda value: list(value) if isinstance(value, tuple) else value)
Int = Annotated[int, _number_from_text(int)]
Float = Annotated[float, Field(allow_inf_nan=False), _number_from_text(float)]
Count = Annotated[Int, Field(ge=1)]
Seed = Annotated[Int, Field(ge=0, lt=2**63)]
Fraction = Annotated[Float, Field(gt=0, lt=1)]
NonNegative = Annotated[Float, Field(ge=0)]


class TrainSchema(BaseModel):
    """One field per ``TrainConfig`` field (a test keeps the two in step)."""
    model_config = ConfigDict(strict=True, extra="forbid")
    image_size: Annotated[Int, Field(ge=IMAGE_SIZE_RANGE[0], le=IMAGE_SIZE_RANGE[1]),
                          AfterValidator(_multiple_of_stride)] = None
    base_width: Annotated[Int, Field(ge=1, le=MODEL_CONFIG_SCHEMA["base"][2])] = None
    epochs: Count = None
    batch_size: Count = None
    lr: Annotated[Float, Field(gt=0)] = None
    schedule: Literal[SCHEDULES] = None
    warmup_frac: Annotated[Float, Field(ge=0, lt=1)] = None
    weight_decay: NonNegative = None
    loss: Literal[LOSSES] = None
    augment: bool = None
    seed: Seed = None
    device: Annotated[str, AfterValidator(_device_name)] = None
    threads: Annotated[Int, Field(ge=0)] = None
    amp: Literal[AMP_MODES] = None
    channels_last: bool = None
    deterministic: bool = None
    max_train_seconds: Optional[Annotated[Float, Field(gt=0)]] = None
    snapshot_epochs: Annotated[list[Count], TUPLE_AS_LIST] = None
    input_norm: Literal[INPUT_NORMS] = None
    augment_level: Literal[tuple(AUGMENT_LEVELS)] = None
    healthy_ratio: NonNegative = None
    healthy_seed: Seed = None
    limit_train: Optional[Count] = None
    limit_val: Optional[Count] = None
    threshold: Fraction = None
    ema_decay: Optional[Fraction] = None
    head_crop: bool = None
    small_tumour_oversample: Optional[Annotated[int, Field(ge=1, le=10)]] = None

    @model_validator(mode="after")
    def _time_schedule_has_a_budget(self):
        given = self.model_fields_set
        if ({"schedule", "max_train_seconds"} <= given and self.schedule == "time_cosine"
                and self.max_train_seconds is None):
            raise ValueError("schedule: 'time_cosine' needs max_train_seconds (seconds > 0)")
        return self


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(error: dict) -> str:
    """One pydantic error as ``key: what is wrong, got value``."""
    key = ".".join(str(p) for p in error["loc"])
    kind, value = error["type"], error.get("input")
    msg = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        msg, kind = "no such parameter (params/base.yaml lists every one)", "value_error"
    elif kind == "bool_type" and isinstance(value, str):
        msg = "must be true or false without quotes (quoted, it is text)"
    elif kind in ("int_type", "float_type") and isinstance(value, bool):
        msg, kind = f"must be a number, not the boolean {value}", "value_error"
    else:
        msg = msg.replace("Input should be", "must be")
    got = "" if kind == "value_error" else f", got {_short(value)}"
    return f"{key}: {msg}{got}" if key else f"{msg}{got}"


def check(schema: type[BaseModel], values, source: str) -> None:
    """Validate ``values`` (a mapping, any subset of the schema's keys) against ``schema``;
    ValueError in one line, ``<source>: <key>: <problem>; ...``, when anything is wrong."""
    if not isinstance(values, dict):
        raise ValueError(f"{source}: must be a mapping of parameter: value, not {_short(values)}")
    try:
        schema.model_validate(values)
    except ValidationError as e:
        raise ValueError(f"{source}: " + "; ".join(describe(err) for err in e.errors())) from None
