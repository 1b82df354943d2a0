"""Release the model a round of lever trials adopted (issue 24):
``python -m brainseg_lib release --plan params/release_levers_<k>.yaml``.

The round's decision file (``release_levers/decision-<name>.json``, written by ``release-levers``)
names the release: its trial (``release_trial``), the trial whose checkpoints it scores
(``release_checkpoints_of``), an ensemble's member seeds (``release_member_seeds``) and the
inference settings the verdict judged (``release_inference``: test-time flips, component removal,
an inference-only head crop). The released file is exactly what the rule judged on the trial's
first seed: the same checkpoints (trained by ``release-levers --plan``, deterministic at a fixed
thread count, so the same command gives the same weights), the same settings, recorded in the
file so that ``predict``, the ONNX export and ``evaluate-release`` apply them.

Nothing is chosen here: a round that adopted nothing is refused, and so is a decision whose
trial the plan does not hold or whose checkpoints are missing (they are git-ignored: train them
with the plan's command first). TEST is read only after the choice, once, by ``evaluate-release``
(every set) and by the ``predict`` check; the two must agree on Br35H TEST within ``TOLERANCE``.
"""
from __future__ import annotations

import json
from pathlib import Path

from brainseg_lib import paths
from brainseg_lib.study.release import TOLERANCE, ReleaseRefused, predict_check, write_card

SEEDS_JSON = "release_recipe_seeds.json"   # beside release.json: ./run_all.sh carries the release's folder


def read_decision(plan: dict, out_dir=None) -> dict:
    """The round's decision file, refused when missing or written from another plan file."""
    from brainseg_lib.study import release_levers as rl
    from brainseg_lib.study.release_choice import output_names
    path = rl.folder(out_dir) / output_names(plan)["json"]
    if not path.is_file():
        raise ReleaseRefused(f"{path} not found: judge the round first with "
                             f"`python -m brainseg_lib release-levers --plan {plan['source']}`")
    decision = json.loads(path.read_text())
    if decision.get("plan") != plan["source"]:
        raise ReleaseRefused(f"{path} was written from {decision.get('plan')!r}, not {plan['source']!r}")
    return {**decision, "file": paths.display_path(path)}


def chosen(plan: dict, decision: dict, out_dir=None) -> dict:
    """What the decision releases: trial, lever text, member runs, their checkpoints, settings."""
    from brainseg_lib.study import release_levers as rl
    tag = decision["release_trial"]
    if not decision.get("adopted"):
        raise ReleaseRefused(f"{decision['file']}: round {plan.get('name') or 1} adopted no trial, so the "
                             "released model stays as it is (`python -m brainseg_lib release` releases the "
                             "study's cpu run)")
    if tag not in [t["tag"] for t in plan["trials"]]:
        raise ReleaseRefused(f"{decision['file']}: release trial {tag!r} is not a trial of {plan['source']} "
                             "(a combination trial is not released from a plan yet)")
    seed = plan["seeds"][0]
    ckpts = rl.checkpoints(plan, tag, seed, out_dir)
    missing = [p for p in ckpts if not p.is_file()]
    if missing:
        raise ReleaseRefused(f"{', '.join(map(str, missing))} not found (trained checkpoints are not "
                             f"committed): train them with `python -m brainseg_lib release-levers --plan "
                             f"{plan['source']}`, which gives the same weights")
    inference = {k: v for k, v in decision.get("release_inference", {}).items() if v}
    if inference.get("standardize"):
        raise ReleaseRefused(f"{decision['file']}: trial {tag!r} standardises each scan's histogram "
                             "(data.standardize), which predict, the ONNX export and evaluate-release do "
                             "not apply yet: teach them (inference.ScanSettings) before releasing it")
    return {"trial": tag, "lever": rl.trial(plan, tag).get("lever"), "seed": seed,
            "member_runs": rl.member_runs(plan, tag, seed), "checkpoints": ckpts, "inference": inference}


def release_from_plan(plan_path, dest: Path | None = None, data_root=None, out_dir=None) -> dict:
    """Release the trial the round at ``plan_path`` adopted (module doc) to ``dest`` (default:
    ``paths.released_model()``): the file, its ONNX export, ``release_eval.json``, ``release.json``
    and the model card."""
    from brainseg_lib.data.br35h import list_split
    from brainseg_lib.fileio import display_path, write_json
    from brainseg_lib.model.onnx import export_onnx
    from brainseg_lib.model.released import release_model
    from brainseg_lib.study import release_levers as rl
    from brainseg_lib.study.release_eval import evaluate_release
    plan = rl.load_plan(plan_path)
    decision = read_decision(plan, out_dir)
    what = chosen(plan, decision, out_dir)
    dest = Path(dest) if dest is not None else paths.released_model()
    ckpts = what["checkpoints"]
    model = release_model(ckpts, dest, inference=what["inference"] or None)
    export_onnx(model)
    ev = evaluate_release(model, data_root=data_root)
    check = predict_check(model, data_root)
    reported = ev["br35h_test"]["pooled_f1"]
    diff = abs(check["f1"] - reported)
    n_train, n_val = (len(list_split(s, data_root)[0]) for s in ("train", "val"))
    info = {"model": display_path(model), "from_plan": plan["source"], "decision": decision["file"],
            "from_trial": what["trial"], "lever": what["lever"], "trial_seed": what["seed"],
            "member_runs": what["member_runs"],
            "source_checkpoints": [display_path(p) for p in ckpts], "inference": what["inference"],
            "size_bytes": model.stat().st_size,
            "sha256": model.with_name(model.name + ".sha256").read_text().split()[0],
            "train_images": n_train, "val_images": n_val,
            "test_f1_native_reported": reported, "reported_in": "results/metrics/release_eval.json",
            "test_f1_via_predict": check["f1"], "abs_difference": diff,
            "within_tolerance": bool(diff <= TOLERANCE), "tolerance": TOLERANCE}
    if diff > TOLERANCE:
        raise RuntimeError(f"released model disagrees with its evaluation: F1 {check['f1']:.4f} via predict "
                           f"vs {reported:.4f} in release_eval.json")
    write_json(recipe_seeds(plan, what, info["sha256"], data_root, out_dir), dest.parent / SEEDS_JSON)
    write_json(info, dest.parent / "release.json")
    write_card(dest.parent)
    return info


def member_records(info: dict, out_dir=None) -> list[dict]:
    """The lever run JSON (``release_levers/metrics/<run>.json``) of each member of a plan release."""
    from brainseg_lib.study import release_levers as rl
    return [json.loads((rl.folder(out_dir) / "metrics" / f"{r}.json").read_text()) for r in info["member_runs"]]


def recipe_seeds(plan: dict, what: dict, release_sha256: str, data_root=None, out_dir=None) -> dict:
    """Br35H TEST (official) of each seed of the released trial (for an ensemble trial, its k-th
    ensemble), each packed and scored as the released file is (``release_eval``), after the choice:
    how much the recipe, not only the released seed, varies. Seed 0 is the released file."""
    import tempfile

    import numpy as np

    from brainseg_lib.evaluation.metrics import COUNTS, metrics_from_counts
    from brainseg_lib.model.released import release_model
    from brainseg_lib.study import release_levers as rl
    from brainseg_lib.study.release_eval import br35h_test_half, released_settings, score_set
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in plan["seeds"]:
            ckpts = rl.checkpoints(plan, what["trial"], seed, out_dir)
            if not all(p.is_file() for p in ckpts):
                raise ReleaseRefused(f"{', '.join(map(str, ckpts))}: a seed of the released trial is not trained; "
                                     f"train it with `python -m brainseg_lib release-levers --plan {plan['source']}`")
            f = release_model(ckpts, Path(tmp) / f"seed{seed}.pt", inference=what["inference"] or None)
            model, tcfg, inf = released_settings(f)
            half = br35h_test_half(int(tcfg["image_size"]), data_root, inf.get("head_crop", False))
            df = score_set(model, half, float(tcfg.get("threshold", 0.5)), inf)
            rows.append({"seed": int(seed), "member_runs": rl.member_runs(plan, what["trial"], seed),
                         "pooled_f1": metrics_from_counts(*(int(df[c].sum()) for c in COUNTS))["f1"],
                         "per_image_mean_dice": float(df["dice"].mean())})
    out = {"from_plan": plan["source"], "trial": what["trial"], "release_sha256": release_sha256,
           "set": "Br35H TEST (official split)", "seeds": rows}
    for key, col in (("f1", "pooled_f1"), ("dice", "per_image_mean_dice")):
        v = np.array([r[col] for r in rows])
        out[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
                    "n": int(len(v))}
    return out
