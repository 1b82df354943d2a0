"""Facts about the dataset, measured from the files (notebook 01)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from PIL import Image

from brainseg_lib.data.br35h import SPLITS, list_split, load_sample


def image_inventory(splits=SPLITS, root=None, limit: int | None = None) -> pd.DataFrame:
    """One row per annotated image: split, name, width, height, PIL mode, region kinds,
    number of regions and tumour fraction of the native-size mask."""
    rows = []
    for split in splits:
        anns, folder = list_split(split, root)
        for a in anns[:limit]:
            with Image.open(folder / a.filename) as im:
                mode = im.mode
            s = load_sample(a, folder)
            kinds = Counter(s.kinds)
            rows.append({"split": split, "name": a.filename, "width": s.image.shape[1],
                         "height": s.image.shape[0], "mode": mode, "n_regions": len(s.kinds),
                         "polygon": kinds.get("polygon", 0), "ellipse": kinds.get("ellipse", 0),
                         "circle": kinds.get("circle", 0),
                         "tumour_fraction": float(s.mask.mean())})
    return pd.DataFrame(rows)


def split_summary(inv: pd.DataFrame) -> pd.DataFrame:
    """Counts per split: images, distinct sizes, modes, shape kinds, regions per image."""
    g = inv.groupby("split", sort=False)
    out = pd.DataFrame({
        "images": g.size(),
        "distinct_sizes": g.apply(lambda d: d[["width", "height"]].drop_duplicates().shape[0],
                                  include_groups=False),
        "RGB": g.apply(lambda d: int((d["mode"] == "RGB").sum()), include_groups=False),
        "L": g.apply(lambda d: int((d["mode"] == "L").sum()), include_groups=False),
        "polygons": g["polygon"].sum(), "ellipses": g["ellipse"].sum(), "circles": g["circle"].sum(),
        "max_regions": g["n_regions"].max(),
    })
    return out


def area_quantiles(inv: pd.DataFrame, qs=(0.0, 0.25, 0.5, 0.75, 1.0)) -> pd.DataFrame:
    """Quantiles of the tumour fraction of the image, per split."""
    return inv.groupby("split", sort=False)["tumour_fraction"].quantile(list(qs)).unstack().round(4)


def rotated_ellipse_examples(inv: pd.DataFrame, root=None, n: int = 3):
    """The n annotated ellipses whose rotation is easiest to see (large |sin 2theta| and
    elongation), to check the rotation direction by eye. Returns (split, Sample) pairs."""
    scored = []
    for split in SPLITS:
        anns, folder = list_split(split, root)
        for a in anns:
            for r in a.regions:
                if r.get("name") != "ellipse":
                    continue
                t = float(r.get("theta", 0) or 0)
                rx, ry = float(r["rx"]), float(r["ry"])
                score = abs(np.sin(2 * t)) * (1 - min(rx, ry) / max(rx, ry))
                scored.append((score, split, a.filename))
    scored.sort(reverse=True)
    out, seen = [], set()
    for _, split, name in scored:
        if name in seen:
            continue
        seen.add(name)
        anns, folder = list_split(split, root)
        out.append((split, load_sample(next(a for a in anns if a.filename == name), folder)))
        if len(out) >= n:
            break
    return out


def pick_examples(inv: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A fixed, seeded choice of n images spread over the splits."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(inv), size=min(n, len(inv)), replace=False)
    return inv.iloc[np.sort(idx)]
