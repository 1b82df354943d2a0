"""Steps 3 and 4 of the release plan's rule, and the files they leave.

Step 3: the release profile is r0 plus every adopted training lever; two or more are combined
in one trial (``COMBINED_TAG``, seed 0) that must itself beat r0; otherwise the adopted lever
with the highest gain is released alone (ties to the simpler one). Step 4: each inference
lever is scored on the release trial's checkpoints (``<release>+<lever>``) and judged against
the release trial by the same verdict, paired on the same seeds.

A trial that scores another trial's checkpoints (``checkpoints_of``: test-time flips and a
component gate on its weights; ``ensemble_of``: a seed ensemble of them) is never combined with
others in step 3: when it is adopted with other trials, the one with the highest gain is
released; its plan holds no inference levers (``release_levers.load_plan`` refuses them), its
own settings are the release's inference.

``write_outputs`` writes ``decision.json`` and ``lever_table.{csv,md}`` under the plan's folder,
and refreshes ``seed_by_seed.{csv,md}`` (``release_seeds``: every round's trials seed by seed).
"""
from __future__ import annotations

import json
from pathlib import Path

from brainseg_lib.study import release_levers as rl
from brainseg_lib.study import release_rule as rr

COMBINED_TAG = "r9-combined"


def combined_tag(plan: dict) -> str:
    """The combination trial's tag: ``COMBINED_TAG``, with the round's name in a later round."""
    return f"{COMBINED_TAG}-{plan['name']}" if plan.get("name") else COMBINED_TAG


def with_combination(plan: dict, adopted: list[str]) -> dict:
    """The plan with the trial that combines the adopted levers (when there are two or more)."""
    if len(adopted) < 2:
        return plan
    merged = {}
    for tag in adopted:
        merged.update(rl.trial(plan, tag).get("set") or {})
    combo = {"tag": combined_tag(plan), "against": plan["trials"][0]["tag"], "set": merged,
             "lever": "the adopted levers together: " + ", ".join(adopted)}
    return {**plan, "trials": [*plan["trials"], combo]}


def containing_all(plan: dict, adopted: list[str]) -> str | None:
    """The adopted trial whose changes hold every other adopted trial's (same keys, same
    values), if there is one: combining them would only train it again."""
    sets = {t: (rl.trial(plan, t).get("set") or {}) for t in adopted}
    for tag, mine in sets.items():
        if all(other.items() <= mine.items() for other in sets.values()):
            return tag
    return None


def release_trial(plan: dict, decision: dict, out_dir=None) -> tuple[str, dict]:
    """(the trial released, the plan it is in), training the combination when step 3 needs it."""
    adopted, reference = decision["adopted"], plan["trials"][0]["tag"]
    if not adopted:
        return reference, plan
    if len(adopted) >= 2 and not any(rl.trained_tag(plan, t) != t for t in adopted):
        widest = containing_all(plan, adopted)
        if widest is not None:
            return widest, plan         # one adopted trial already holds every other's changes
        full = with_combination(plan, adopted)
        tag = combined_tag(plan)
        rl._train_and_score(full, tag, full["seeds"][:1], out_dir)
        v = rr.verdict(full, tag, reference, out_dir, require_all_seeds=False)
        decision["combined"] = v
        if v["adopted"]:
            return tag, full
    gains = {t["tag"]: t["gain"] for t in decision["trials"] if t.get("adopted")}
    order = sorted(adopted, key=lambda t: (-round(gains[t], 3), len(rl.trial(plan, t).get("set") or {})))
    return order[0], plan


def inference_tag(release: str, lever: dict) -> str:
    return f"{release}+{lever['tag']}"


def judge_inference(plan: dict, release: str, out_dir=None) -> list[dict]:
    """Step 4: each inference lever on the release trial's checkpoints, against it."""
    out = []
    for lever in plan.get("inference") or []:
        tag = inference_tag(release, lever)
        for s in rr.seeds_of(release, plan, out_dir):
            if not all(rl.per_slice_path(tag, s, w, out_dir).is_file() for w in rl.SETS):
                rl.score_trial(plan, tag, s, out_dir, ckpt_tag=release, tta=lever["tta"],
                               min_component=lever["min_component"])
        v = rr.verdict({**plan, "trials": [*plan["trials"], {"tag": tag}]}, tag, release, out_dir,
                       require_all_seeds=False)
        v["all_seeds_of_release"] = rr.seeds_of(tag, plan, out_dir) == rr.seeds_of(release, plan, out_dir)
        v["adopted"] = v["adopted"] and v["all_seeds_of_release"]
        out.append({**v, "lever": lever["lever"], "tta": lever["tta"], "min_component": lever["min_component"]})
    return out


def choose(plan: dict | None = None, out_dir=None, screen_only: bool = False) -> dict:
    """The whole rule: verdicts, the release trial, the inference levers; written to files.
    ``screen_only``: no judged trial gets seeds beyond 0 (``release_levers.run_plan``)."""
    plan = plan or rl.load_plan()
    decision = rl.run_plan(plan, out_dir, screen_only=screen_only)
    release, full = release_trial(plan, decision, out_dir)
    decision["plan"] = plan.get("source")
    decision["release_trial"] = release
    trained = rl.trained_tag(full, release)
    decision["release_set"] = rl.trial(full, trained).get("set") or {}
    decision["inference"] = judge_inference(full, release, out_dir)
    decision["release_inference"] = {"tta": any(v["adopted"] and v["tta"] for v in decision["inference"]),
                                     "min_component": max([v["min_component"] for v in decision["inference"]
                                                           if v["adopted"]], default=0.0)}
    if trained != release:             # a trial that scores another's checkpoints: its seed 0's settings
        decision["release_checkpoints_of"] = trained
        decision["release_inference"] = rl.settings_used(full, release, full["seeds"][0], out_dir)
        if rl.trial(full, release).get("members"):   # an ensemble: its seed 0's member seeds
            decision["release_member_seeds"] = rl.member_seeds(full, release, full["seeds"][0])
    write_outputs(full, decision, out_dir)
    return decision


def write_outputs(plan: dict, decision: dict, out_dir=None) -> dict[str, Path]:
    from brainseg_lib import paths
    from brainseg_lib.fileio import atomic_write_text, write_csv, write_json
    from brainseg_lib.study.release_table import lever_table, table_markdown
    out = paths.ensure(rl.folder(out_dir))
    table = lever_table(plan, decision, out_dir)
    names = output_names(plan)
    written = {"json": write_json(json.loads(json.dumps(decision, default=_plain)), out / names["json"]),
               "csv": write_csv(table, out / names["csv"]),
               "md": atomic_write_text(out / names["md"], table_markdown(table, plan.get("source", "the plan")))}
    if decision.get("plan"):           # a decision that names its plan file: the seed table of every round
        from brainseg_lib.study.release_seeds import write_seed_table
        written.update({f"seeds_{k}": v for k, v in write_seed_table(out_dir).items()})
    return written


def output_names(plan: dict) -> dict[str, str]:
    """File names of a plan's verdicts: ``decision.json`` and ``lever_table.{csv,md}``, or with
    ``-<name>`` for a later round that shares the trials' folder (``name`` in the plan)."""
    from brainseg_lib.names import check_name
    suffix = f"-{check_name(plan['name'], 'release plan name')}" if plan.get("name") else ""
    return {"json": f"decision{suffix}.json", "csv": f"lever_table{suffix}.csv",
            "md": f"lever_table{suffix}.md"}


def _plain(v):
    return v.item() if hasattr(v, "item") else str(v)
