"""How much of each frame the head fills, by set: why release lever round 7 crops to the head.

``python -m brainseg_lib head-frames`` measures, on images only (no model, no label), the share
of the frame that ``data.head_crop.head_box`` covers, for every Br35H TRAIN image, every healthy
TRAIN scan, and every slice of the TCGA-LGG and Figshare ``dev`` halves (the data a choice may rest
on; TEST and the ``test`` halves are not read). A head that fills less of its frame reaches the
model's fixed-size input smaller. Written to ``results/release_levers/head_frames.{csv,md}``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data.head_crop import box_share

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def set_images(data_root=None) -> dict[str, list[Path]]:
    """The image files of each set measured (see the module doc)."""
    from brainseg_lib.data import external as ext
    from brainseg_lib.data.br35h import NO, list_split
    from brainseg_lib.data.br35h import data_root as br35h_root
    from brainseg_lib.data.healthy import role_names
    anns, folder = list_split("train", data_root)
    out = {"Br35H TRAIN (annotated)": [folder / a.filename for a in anns],
           "Br35H healthy TRAIN (no/)": [br35h_root(data_root) / NO / n for n in role_names("train")]}
    for which in ("lgg", "figshare"):
        base = ext.check_external(which=which)
        man = pd.read_csv(base / "manifest.csv")
        names = man.loc[man["half"] == "dev", "name"]
        out[f"{ext.external_set(which).title}, dev"] = [base / "dev" / "images" / f"{n}.png" for n in names]
    return out


def head_frame_table(data_root=None) -> pd.DataFrame:
    """One row per set: how many images, and the quantiles of their head-box share."""
    from brainseg_lib.data.images import read_grayscale
    rows = []
    for name, files in set_images(data_root).items():
        shares = np.array([box_share(read_grayscale(f)) for f in files])
        rows.append({"set": name, "n_images": len(files),
                     **{f"q{int(q * 100)}": float(np.quantile(shares, q)) for q in QUANTILES},
                     "whole_frame_share": float((shares >= 1.0).mean())})
    return pd.DataFrame(rows)


def table_markdown(table: pd.DataFrame) -> str:
    cols = [f"q{int(q * 100)}" for q in QUANTILES]
    head = ("| set | images | " + " | ".join(f"{c[1:]}th pct" for c in cols) + " | box = whole frame |\n|"
            + "---|" * (3 + len(cols)) + "\n")
    lines = [f"| {r['set']} | {r['n_images']} | " + " | ".join(f"{r[c]:.2f}" for c in cols)
             + f" | {r['whole_frame_share']:.2f} |" for _, r in table.iterrows()]
    return (head + "\n".join(lines) + "\n\nShare of the frame covered by the head's box "
            "(`data.head_crop.head_box`: its margin included, the whole frame when no head is found), "
            "by set, from the images alone. Written by `python -m brainseg_lib head-frames`.\n")


def write_head_frame_table(data_root=None) -> dict[str, Path]:
    from brainseg_lib.fileio import atomic_write_text, write_csv
    out = paths.ensure(paths.release_levers_dir())
    table = head_frame_table(data_root)
    return {"csv": write_csv(table, out / "head_frames.csv"),
            "md": atomic_write_text(out / "head_frames.md", table_markdown(table))}
