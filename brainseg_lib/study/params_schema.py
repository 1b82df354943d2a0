"""The schema of every study parameter (``params/base.yaml``) and of the lever plan.

``ParamsSchema`` extends ``training.schema.TrainSchema`` (strict types, the same rules for
numbers written as text) with the run-level keys ``run_profile`` reads (``RUN_KEYS``) and the
keys only notebooks or the sweep read. ``check_params`` is called on each profile file, on
the merged profile, on each ``--set`` value and on the result of all of them, so a bad value
is refused in one line naming the key and the file before any cache is built.
``check_plan`` does the same for ``params/levers.yaml``: its shape, ``fixed`` and each
trial's ``set``.

The names of the explainability choices are stated here and kept equal to ``xai``'s by a
test (importing ``xai`` would load captum for every profile read).
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from brainseg_lib.data.splits import SPLIT_SCHEMES
from brainseg_lib.training.losses import LOSSES
from brainseg_lib.training.schema import TUPLE_AS_LIST, Count, Float, Seed, TrainSchema, check

XAI_TARGETS = ("pred", "gt")       # xai.attribution.TARGETS
XAI_FILLS = ("mean", "zero")       # xai.deletion.FILLS


class ParamsSchema(TrainSchema):
    """Every parameter of the study; all optional (a profile file lists only what it changes)."""
    profile: str = None
    split_scheme: Literal[SPLIT_SCHEMES] = None
    split_seed: Seed = None
    tune_threshold: bool = None
    limit_test: Optional[Count] = None
    run_tag: Optional[str] = None
    external_dev: bool = None
    score_test: bool = None
    detection_points: bool = None
    detection_limit: Optional[Count] = None
    tune_allocator: bool = None
    checkpoint_every: Count = None
    n_examples: Count = None
    gallery_pairs: Count = None
    run_sweep: bool = None
    sweep_split_draws: Count = None
    sweep_seeds: Annotated[list[Seed], TUPLE_AS_LIST] = None
    sweep_extra_losses: Annotated[list[Literal[LOSSES]], TUPLE_AS_LIST] = None
    sweep_variants: dict[str, "ParamsSchema"] = None
    xai_images: Count = None
    xai_ig_steps: Count = None
    xai_occlusion_frac: Annotated[Float, Field(gt=0, le=1)] = None
    xai_target: Literal[XAI_TARGETS] = None
    xai_fill: Literal[XAI_FILLS] = None
    external_boot: Count = None
    detection_gallery: Count = None


ParamsSchema.model_rebuild()


class TrialSchema(BaseModel):
    """One lever trial: its tag, what it changes (``set``) and the trial it is compared with."""
    model_config = ConfigDict(strict=True, extra="forbid")
    tag: str
    lever: str = ""
    against: Optional[str] = None
    set: ParamsSchema = None


class PlanSchema(BaseModel):
    """``params/levers.yaml``: the base profile, the keys fixed for every trial, the rule, the trials."""
    model_config = ConfigDict(strict=True, extra="forbid")
    base: str
    fixed: ParamsSchema = None
    rule: dict[str, Float] = None
    trials: list[TrialSchema]


class InferenceLeverSchema(BaseModel):
    """One inference lever of the release plan: test-time flips and/or small-component removal."""
    model_config = ConfigDict(strict=True, extra="forbid")
    tag: str
    lever: str = ""
    tta: bool = False
    min_component: Annotated[Float, Field(ge=0, lt=1)] = 0.0


class ReleaseTrialSchema(TrialSchema):
    """A release lever trial; with ``checkpoints_of`` it trains nothing of its own: it scores
    that trial's checkpoints with test-time flips (``tta``) and a small-component removal, fixed
    (``min_component``) or calibrated per seed on the healthy VAL scans (``gate: healthy_val``). With
    ``ensemble_of`` it trains more seeds of that trial and scores, as its seed k, the mean logits of
    that trial's seeds k*members ... k*members + members - 1 (``release_levers.member_seeds``).
    ``head_crop`` (with ``checkpoints_of``) crops each scan to the head before the resize.
    ``threshold`` (with either) replaces the checkpoints' own (0.5) as the probability at which a
    pixel is tumour, for the component removal as for the mask. ``standardize: br35h_train`` (with
    either) maps every scan's head histogram to Br35H TRAIN's landmarks first (``data.standardize``)."""
    checkpoints_of: Optional[str] = None
    head_crop: bool = False
    tta: bool = False
    min_component: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    gate: Optional[Literal["healthy_val"]] = None
    ensemble_of: Optional[str] = None     # scores the mean logits of `members` of that trial's seeds
    members: Annotated[int, Field(ge=2, le=10)] = None
    threshold: Annotated[Float, Field(gt=0, lt=1)] = None
    standardize: Optional[Literal["br35h_train"]] = None


class ReleaseRuleSchema(BaseModel):
    """The rule of ``params/release_levers.yaml`` (its comments say what each key does)."""
    model_config = ConfigDict(strict=True, extra="forbid")
    screen_gain: Float
    max_val_f1_loss: Float
    max_healthy_marked: Float = None       # absolute limits on the seed means (None: none) ...
    max_lgg_clean_marked: Float = None
    max_healthy_marked_rise: Float = None  # ... and limits on the rise over ``against``'s
    max_lgg_clean_marked_rise: Float = None
    n_boot: Count = 2000
    lgg_held_out_sites: list[str] = []


class ReleasePlanSchema(PlanSchema):
    """``params/release_levers.yaml``: a lever plan with its seeds and inference levers."""
    rule: ReleaseRuleSchema
    trials: list[ReleaseTrialSchema]
    name: str = None        # a later round's name: its verdicts go to decision-<name>.json
    seeds: Annotated[list[Seed], TUPLE_AS_LIST]
    inference: list[InferenceLeverSchema] = None


def check_release_plan(plan, source: str):
    """``plan`` (the release lever plan) against ``ReleasePlanSchema``; returns it unchanged."""
    check(ReleasePlanSchema, plan, source)
    return plan


def check_params(values, source: str) -> None:
    """``values`` (any subset of the parameters) against ``ParamsSchema``; ValueError in one
    line naming ``source`` and each bad key."""
    check(ParamsSchema, values, source)


def check_plan(plan, source: str):
    """``plan`` (a lever plan) against ``PlanSchema``; returns it unchanged."""
    check(PlanSchema, plan, source)
    return plan
