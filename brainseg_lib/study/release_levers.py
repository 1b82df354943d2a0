"""Choosing the released model: the lever trials of ``params/release_levers.yaml`` (issue 24).

``python -m brainseg_lib release-levers`` trains every trial's seed 0, then the seeds 1 and 2
of the reference trial and of each trial that passes the plan's screen
(``release_rule.screen``), into ``paths.release_levers_dir()`` (finished runs are skipped). Each
trained checkpoint is then scored slice by slice on the data a choice may rest on
(``score_trial``): Br35H VAL, the healthy VAL scans, the TCGA-LGG ``dev`` half and the Figshare
``dev`` half, written to ``per_slice/<trial>-seed<k>-<set>.csv``; the inference levers are
scored the same way on the checkpoints they name. A trial with ``ensemble_of`` trains more seeds
of that trial and scores their seed ensembles (``member_seeds``, ``model.ensemble``).
``release_rule`` turns those files into the verdicts. TEST and the external ``test`` halves are not read by any of this.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from brainseg_lib import paths

PLAN_YAML = paths.PARAMS_DIR / "release_levers.yaml"
SETS = ("val", "healthy", "lgg", "figshare")


def load_plan(path: str | Path | None = None) -> dict:
    """A release lever plan, checked: its schema; a ``name`` (a safe file-name part) for every
    round but the first, whose verdicts keep the plain file names; at least one false-alarm
    limit (absolute or rise) per figure. ``source`` records the file, for the table's note."""
    from brainseg_lib.study.params_schema import check_release_plan
    from brainseg_lib.study.params_yaml import read_params_file
    path = Path(path or PLAN_YAML)
    plan = check_release_plan(read_params_file(path), str(path))
    check_round(plan, path)
    return {**plan, "source": paths.display_path(path)}


def check_round(plan: dict, path: Path) -> None:
    """The checks of a round the schema cannot make (``load_plan``'s docstring)."""
    from brainseg_lib.names import check_name
    if plan.get("name") is not None:
        check_name(plan["name"], f"{path}: name")
    elif path.resolve() != PLAN_YAML.resolve():
        raise ValueError(f"{path}: a later release lever round needs a `name` (its verdicts are "
                         "written as decision-<name>.json), or it would overwrite round 1's")
    tags = [t["tag"] for t in plan["trials"]]
    for i, t in enumerate(plan["trials"]):
        src, ens = t.get("checkpoints_of"), t.get("ensemble_of")
        if src is not None and (src not in tags[:i] or t.get("set") or trained_tag(plan, src) != src):
            raise ValueError(f"{path}: trial {t['tag']!r} scores the checkpoints of {src!r}, which must be "
                             "an earlier trial that trains its own; such a trial changes nothing in `set`")
        if src is None and ens is None and (t.get("tta") or t.get("gate") or t.get("min_component")
                                            or t.get("head_crop") or t.get("standardize")
                                            or t.get("threshold") is not None):
            raise ValueError(f"{path}: trial {t['tag']!r} sets tta, min_component, gate, head_crop, "
                             "standardize or threshold "
                             "without `checkpoints_of` or `ensemble_of`: those score another trial's "
                             "checkpoints (a trial that trains on cropped scans sets head_crop in `set`)")
        if ens is not None and t.get("gate"):
            raise ValueError(f"{path}: trial {t['tag']!r}: a gate calibrates one checkpoint, not an "
                             "ensemble (give an ensemble a fixed min_component)")
        if t.get("gate") and t.get("standardize"):
            raise ValueError(f"{path}: trial {t['tag']!r}: a gate is calibrated on scans that are not "
                             "standardised (release_scoring.gate_fraction); set one or the other")
        if t.get("gate") and (t.get("against") != tags[0] or t.get("min_component")
                              or t.get("threshold") is not None):
            raise ValueError(f"{path}: trial {t['tag']!r} has a gate: it calibrates to the reference "
                             f"({tags[0]!r}) as its `against`, at the checkpoint's threshold, and its "
                             "size is chosen, not set")
        if (ens is None) != (t.get("members") is None) or (ens is not None and (
                src is not None or ens not in tags[:i] or t.get("set") or trained_tag(plan, ens) != ens)):
            raise ValueError(f"{path}: trial {t['tag']!r}: `ensemble_of` and `members` go together and "
                             "name an earlier trial that trains its own; such a trial sets nothing else "
                             "but how it is scored (tta, min_component, head_crop, standardize, threshold)")
    if any(t.get("checkpoints_of") or t.get("ensemble_of") for t in plan["trials"]) and plan.get("inference"):
        raise ValueError(f"{path}: a plan with trials that score other trials' checkpoints holds no "
                         "inference levers (their settings would replace the trial's own)")
    rule = plan["rule"]
    for figure in ("max_healthy_marked", "max_lgg_clean_marked"):
        if rule.get(figure) is None and rule.get(figure + "_rise") is None:
            raise ValueError(f"{path}: the rule sets neither {figure} nor {figure}_rise: "
                             "every false-alarm figure needs a limit")


def trial(plan: dict, tag: str) -> dict:
    for t in plan["trials"]:
        if t["tag"] == tag:
            return t
    raise KeyError(f"no trial {tag!r} in the release plan")


def trial_params(plan: dict, tag: str, seed: int) -> dict:
    """The parameters of one trial's run with ``seed`` (base profile, fixed keys, the trial's
    ``set``); a tag names files, never a path."""
    from brainseg_lib.names import check_name
    from brainseg_lib.study.profiles import load_profile
    check_name(tag, "release lever tag")
    t = trial(plan, tag)
    return {**load_profile(plan["base"]), **plan.get("fixed", {}), **(t.get("set") or {}),
            "seed": int(seed), "run_tag": tag, "tune_threshold": False, "score_test": False,
            "snapshot_epochs": [], "external_dev": False}


def folder(out_dir=None) -> Path:
    return Path(out_dir) if out_dir else paths.release_levers_dir()


def trained_tag(plan: dict, tag: str) -> str:
    """The trial whose checkpoints ``tag`` scores: its ``checkpoints_of`` or ``ensemble_of``,
    else itself."""
    t = trial(plan, tag)
    return t.get("checkpoints_of") or t.get("ensemble_of") or tag


def member_seeds(plan: dict, tag: str, seed: int) -> list[int]:
    """The seeds of ``trained_tag`` whose checkpoints ``tag``'s seed ``seed`` scores: ``seed``
    itself, or for an ensemble of ``members`` the block seed*members ... seed*members + members - 1
    (seed 0: 0, 1, 2; seed 1: 3, 4, 5 ...), so the ensembles of one trial share no member (another
    ensemble trial of the same source, or that source's own seeds, may hold the same runs)."""
    n = trial(plan, tag).get("members")
    return [int(seed)] if not n else [int(seed) * n + j for j in range(n)]


def member_runs(plan: dict, tag: str, seed: int) -> list[str]:
    """The names of the runs whose checkpoints ``tag``'s seed scores (one, or an ensemble's members)."""
    from brainseg_lib.study.experiment import name_for
    src = trained_tag(plan, tag)
    return [name_for(trial_params(plan, src, m)) for m in member_seeds(plan, tag, seed)]


def checkpoints(plan: dict, tag: str, seed: int, out_dir=None) -> list[Path]:
    """Every checkpoint ``tag``'s seed scores (one, or an ensemble's members)."""
    return [folder(out_dir) / "runs" / run / "best.pt" for run in member_runs(plan, tag, seed)]


def checkpoint(plan: dict, tag: str, seed: int, out_dir=None) -> Path:
    """The one checkpoint ``tag``'s seed scores (not for an ensemble)."""
    found = checkpoints(plan, tag, seed, out_dir)
    if len(found) != 1:
        raise ValueError(f"trial {tag!r} scores an ensemble of {len(found)} checkpoints")
    return found[0]


# the sizes (shares of the image) a healthy-VAL gate chooses from, smallest first
GATE_GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05)


def scoring_settings(plan: dict, tag: str, seed: int, out_dir=None) -> dict:
    """How ``tag``'s checkpoints are scored: ``tta`` and ``min_component``; with ``gate:
    healthy_val``, ``min_component`` is the smallest size in ``GATE_GRID`` at which the share of
    healthy VAL scans marked is at most its ``against`` trial's on the same seed (written to
    ``per_slice/<tag>-seed<k>-gate.json``)."""
    t = trial(plan, tag)
    out = how_scored(declared_settings(plan, tag, seed, out_dir))
    if t.get("gate") == "healthy_val":
        from brainseg_lib.fileio import write_json
        from brainseg_lib.study.release_scoring import gate_fraction
        target = float(pd.read_csv(per_slice_path(t["against"], seed, "healthy", out_dir))["marked"].mean())
        chosen, shares = gate_fraction(checkpoint(plan, tag, seed, out_dir), out["tta"], target, GATE_GRID,
                                       head_crop=bool(out.get("head_crop")))
        out["min_component"] = chosen
        write_json({"against": t["against"], "target_share": target, "grid": list(GATE_GRID),
                    "healthy_val_marked": shares, "min_component": chosen,
                    "met": shares[str(chosen)] <= target},     # False: no size in the grid met it
                   gate_path(tag, seed, out_dir))
    return out


def gate_path(tag: str, seed: int, out_dir=None) -> Path:
    return folder(out_dir) / "per_slice" / f"{tag}-seed{seed}-gate.json"


def settings_used(plan: dict, tag: str, seed: int, out_dir=None) -> dict:
    """The ``tta``, ``min_component`` (and ``head_crop``, ``threshold``, ``standardize`` where set) a scored seed of ``tag`` was scored with: as declared,
    a gate's size read from the file ``scoring_settings`` wrote (nothing is computed again)."""
    import json
    declared = declared_settings(plan, tag, seed, out_dir)
    size = (json.loads(gate_path(tag, seed, out_dir).read_text())["min_component"] if declared["gate"]
            else declared["min_component"])
    return {**how_scored(declared), "min_component": float(size)}


def train(plan: dict, tag: str, seeds, out_dir=None) -> None:
    from brainseg_lib.study.sweep import run_sweep
    run_sweep([trial_params(plan, tag, s) for s in seeds], in_process=True, skip_done=True,
              sweep_dir=folder(out_dir))


def per_slice_path(tag: str, seed: int, which: str, out_dir=None) -> Path:
    return folder(out_dir) / "per_slice" / f"{tag}-seed{seed}-{which}.csv"


def scored(tag: str, seed: int, out_dir=None) -> bool:
    return all(per_slice_path(tag, seed, w, out_dir).is_file() for w in SETS)


def score_trial(plan: dict, tag: str, seed: int, out_dir=None, ckpt_tag: str | None = None,
                tta: bool = False, min_component: float = 0.0, head_crop: bool = False,
                threshold: float | None = None, standardize: str | None = None) -> dict[str, pd.DataFrame]:
    """Per-slice rows of one checkpoint (``ckpt_tag``'s, default ``tag``'s) on VAL, the healthy
    VAL scans and both external dev halves, written under ``per_slice/`` with ``tag``'s name;
    ``threshold`` (None: the checkpoints' own) is where a probability becomes tumour; with
    ``standardize`` (``br35h_train``) the reference landmarks are written beside them too."""
    from brainseg_lib.fileio import write_csv
    from brainseg_lib.study.release_scoring import score_checkpoint
    ckpts = checkpoints(plan, ckpt_tag or tag, seed, out_dir)
    for ckpt in ckpts:
        if not ckpt.is_file():
            raise FileNotFoundError(f"no checkpoint {ckpt}; train it first with "
                                    "`python -m brainseg_lib release-levers`")
    reference = standardize_reference(ckpts[0], head_crop, tag, seed, out_dir) if standardize else None
    frames = score_checkpoint(ckpts, tta=tta, min_component=min_component, head_crop=head_crop,
                              threshold=threshold, reference=reference)
    for which, df in frames.items():
        dest = per_slice_path(tag, seed, which, out_dir)
        write_csv(df, paths.ensure(dest.parent) / dest.name)
    return frames


def standardize_reference(ckpt: Path, head_crop: bool, tag: str, seed: int, out_dir=None):
    """Br35H TRAIN's landmarks at the checkpoint's size and crop (``release_scoring.train_reference``),
    written to ``per_slice/<tag>-seed<k>-standardize.json``."""
    from brainseg_lib.data.standardize import LEVELS
    from brainseg_lib.fileio import write_json
    from brainseg_lib.model.checkpoint import load_checkpoint
    from brainseg_lib.study.release_scoring import train_reference
    cfg = load_checkpoint(ckpt)["train_config"]
    crop = bool(head_crop or cfg.get("head_crop", False))
    ref = train_reference(int(cfg["image_size"]), crop)
    write_json({"standardize": "br35h_train", "image_size": int(cfg["image_size"]), "head_crop": crop,
                "percentiles": list(LEVELS), "landmarks": [round(float(v), 4) for v in ref]},
               paths.ensure(folder(out_dir) / "per_slice") / f"{tag}-seed{seed}-standardize.json")
    return ref


def run_plan(plan: dict | None = None, out_dir=None, screen_only: bool = False) -> dict:
    """Train and score what the plan asks for, in its order: every trial's seed 0, then the
    seeds the screen earns (not for a trial whose seed 0 already breaks an absolute limit of the
    seed means whatever the other seeds give: ``release_rule.beyond_reach``). With
    ``screen_only`` a judged trial gets no seed beyond 0 (one that passed its screen is then
    pending: ``release_rule.is_pending``); the trials not judged still get every seed.
    Returns the rule's verdicts (``release_rule.decide``)."""
    from brainseg_lib.study import release_rule
    plan = plan or load_plan()
    seeds = list(plan["seeds"])
    for t in plan["trials"]:
        _train_and_score(plan, t["tag"], seeds[:1], out_dir)
    for t in plan["trials"]:
        if t.get("against") is None or (not screen_only and release_rule.screen(plan, t["tag"], out_dir)
                                        and not release_rule.beyond_reach(plan, t["tag"], out_dir)):
            _train_and_score(plan, t["tag"], seeds[1:], out_dir)
    return release_rule.decide(plan, out_dir)


def declared_settings(plan: dict, tag: str, seed: int, out_dir=None) -> dict:
    """How the plan says ``tag``'s seed is scored: the run whose checkpoint, flips, component size
    or gate (with its grid), and the head crop and threshold where the trial sets them (left out
    otherwise, so the settings recorded before these keys existed still match)."""
    t = trial(plan, tag)
    runs = member_runs(plan, tag, seed)
    out = {"checkpoint_run": runs[0] if len(runs) == 1 else runs,
           "tta": bool(t.get("tta", False)), "min_component": float(t.get("min_component", 0.0)),
           "gate": t.get("gate"), **({"head_crop": True} if t.get("head_crop") else {}),
           **({"threshold": float(t["threshold"])} if t.get("threshold") is not None else {}),
           **({"standardize": t["standardize"]} if t.get("standardize") else {})}
    return {**out, "grid": list(GATE_GRID)} if t.get("gate") else out


def how_scored(declared: dict) -> dict:
    """The ``score_trial`` keywords of declared settings: ``tta``, ``min_component`` and, when
    set, ``head_crop``, ``threshold`` and ``standardize``."""
    return {k: declared[k] for k in ("tta", "min_component", "head_crop", "threshold", "standardize")
            if k in declared}


def settings_path(tag: str, seed: int, out_dir=None) -> Path:
    return folder(out_dir) / "per_slice" / f"{tag}-seed{seed}-settings.json"


def check_settings(plan: dict, tag: str, seed: int, out_dir=None) -> None:
    """Refuse per-slice files of ``tag`` scored with other settings than the plan declares (a
    later round reusing a tag); files from before the settings were recorded are taken as they are."""
    import json
    p = settings_path(tag, seed, out_dir)
    if p.is_file() and json.loads(p.read_text()) != declared_settings(plan, tag, seed, out_dir):
        raise ValueError(f"{p} records other scoring settings than the plan declares for trial "
                         f"{tag!r}: give the trial a new tag")


def check_trained(plan: dict, tag: str, seed: int, out_dir=None) -> None:
    """Refuse a finished run under the name of ``tag``'s trained trial whose recorded training
    config differs from what the plan asks for in any key both hold (a later round reusing a tag
    with another ``set`` gets the same run name, which holds profile, split, loss, seed and tag)."""
    import json
    from brainseg_lib.study.experiment import name_for
    src = trained_tag(plan, tag)
    for m in member_seeds(plan, tag, seed):
        params = trial_params(plan, src, m)
        run_json = folder(out_dir) / "metrics" / f"{name_for(params)}.json"
        if not run_json.is_file():
            continue
        recorded = json.loads(run_json.read_text()).get("config") or {}
        differ = sorted(k for k in recorded.keys() & params.keys() if recorded[k] != params[k])
        if differ:
            raise ValueError(f"{run_json} was trained with other {', '.join(differ)} than the plan "
                             f"asks for trial {src!r}: give the trial a new tag")


def _train_and_score(plan: dict, tag: str, seeds, out_dir=None) -> None:
    from brainseg_lib.fileio import write_json
    for s in seeds:
        check_trained(plan, tag, s, out_dir)
        check_settings(plan, tag, s, out_dir)
    todo = [s for s in seeds if not scored(tag, s, out_dir)]
    if todo:
        train(plan, trained_tag(plan, tag), [m for s in todo for m in member_seeds(plan, tag, s)], out_dir)
    for s in todo:
        score_trial(plan, tag, s, out_dir, **scoring_settings(plan, tag, s, out_dir))
        write_json(declared_settings(plan, tag, s, out_dir), settings_path(tag, s, out_dir))
