"""brainseg_lib.study.leakage: the audit's counts, its JSON summary and the pairs just below
the thresholds, on hand-made pair tables."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.data.duplicates import Fingerprints, flag_pairs
from brainseg_lib.study import leakage

NAMES = ["t1", "t2", "t3", "v1", "s1", "s2"]
OFFICIAL = ["train", "train", "train", "val", "test", "test"]


def _fp() -> Fingerprints:
    n = len(NAMES)
    return Fingerprints(NAMES, OFFICIAL, np.zeros((n, 4), np.float32), np.zeros((n, 4, 63), bool))


def _pairs(rows, mirrored=()) -> pd.DataFrame:
    """A pair table at the library's thresholds (corr >= 0.95 or pHash <= 6); the pairs of
    ``mirrored`` (a, b) are near-duplicates only against a mirror image (``dup_plain`` False)."""
    split = dict(zip(NAMES, OFFICIAL))
    df = pd.DataFrame(rows, columns=["a", "b", "corr", "phash_dist"])
    df["split_a"], df["split_b"] = df["a"].map(split), df["b"].map(split)
    df = flag_pairs(df)
    df["dup_plain"] = df["dup"] & ~pd.Series([(a, b) in mirrored for a, b in zip(df["a"], df["b"])])
    return df


PAIRS = _pairs([("t1", "s1", 0.97, 20),     # a TEST image with a TRAIN copy, by correlation
                ("t2", "v1", 0.50, 3),      # a VAL image with a TRAIN copy, by pHash only
                ("t1", "t2", 0.96, 2),      # two TRAIN images, both signals
                ("t3", "s2", 0.92, 15),     # below both thresholds: a near miss by correlation
                ("t3", "v1", 0.86, 14),     # a further one
                ("s1", "s2", 0.82, 30),     # within TEST
                ("t2", "s2", 0.40, 9)])     # a near miss by pHash only


def test_cross_split_counts_count_images_not_pairs():
    c = leakage.cross_split_counts(_fp(), PAIRS).set_index(["query", "reference"])
    assert c.loc[("test", "train")].tolist() == [2, 1, 0, 1]     # query_images, corr, phash, either
    assert c.loc[("val", "train")].tolist() == [1, 0, 1, 1]
    assert c.loc[("train", "train"), "dup"] == 2 and c.loc[("test", "test"), "dup"] == 0


def test_near_misses_follow_the_split_they_are_given():
    official = pd.DataFrame({"name": NAMES, "split": OFFICIAL})
    got = leakage.near_misses(PAIRS, official)
    corr = got[got.signal == "corr"].set_index("from")
    # flagged pairs never count; within-split pairs never count
    assert corr["cross_split_pairs"].to_dict() == {0.80: 2, 0.85: 2, 0.90: 1}
    assert corr.loc[0.90, "test_images_with_train_partner"] == 1 and corr.loc[0.90, "val_images_with_train_partner"] == 0
    assert corr.loc[0.85, "val_images_with_train_partner"] == 1
    assert (corr["test_images"] == 2).all() and (corr["to"] == 0.95).all()
    ph = got[got.signal == "phash"].iloc[0]
    assert (ph["from"], ph["to"], ph["cross_split_pairs"], ph["test_images_with_train_partner"]) == (7, 12, 1, 1)
    # a split that keeps t3 with s2 and v1, and t2 with s2, leaves no near miss
    moved = pd.DataFrame({"name": NAMES, "split": ["train", "test", "test", "test", "test", "test"]})
    assert leakage.near_misses(PAIRS, moved)["cross_split_pairs"].tolist() == [0, 0, 0, 0]


def test_near_misses_refuse_what_they_cannot_count():
    official = pd.DataFrame({"name": NAMES, "split": OFFICIAL})
    with pytest.raises(ValueError, match="no split of the manifest"):
        leakage.near_misses(PAIRS, official[official.name != "s2"])
    with pytest.raises(ValueError, match="down to correlation"):
        leakage.near_misses(PAIRS, official, bands=(0.70, 0.90))
    with pytest.raises(ValueError, match="near-duplicates"):
        leakage.near_misses(PAIRS, official, bands=(0.90, 0.95))


def test_summary_records_both_splits_near_misses_and_loads_them_back(tmp_path):
    labels = np.array([0, 0, 1, 0, 0, 2])      # t1, t2, v1, s1 linked; t3 and s2 alone
    manifest = pd.DataFrame({"name": NAMES, "group": labels,
                             "split": ["train", "train", "train", "train", "train", "test"]})
    s = leakage.summarize_leakage(_fp(), PAIRS, labels, manifest, seed=3)
    assert s["groups"] == 3 and s["groups_with_duplicates"] == 1 and s["largest_group"] == 4
    assert s["pairs_found"] == {"corr": 2, "phash": 2, "both": 1, "either": 3, "either_without_mirroring": 3}
    g = s["grouped_split"]
    assert g["images_moved_from_official_split"] == 2 and g["max_splits_per_group"] == 1
    assert g["sizes"] == {"train": 5, "val": 0, "test": 1} and g["seed"] == 3
    assert [r["cross_split_pairs"] for r in g["below_thresholds"]] == [2, 1, 1, 1]
    assert [r["cross_split_pairs"] for r in s["official_split"]["below_thresholds"]] == [2, 2, 1, 1]
    (tmp_path / "leakage.json").write_text(json.dumps(s))
    assert leakage.load_near_misses(3, tmp_path) == g["below_thresholds"]
    assert leakage.load_near_misses(0, tmp_path) is None           # another split seed's audit
    (tmp_path / "leakage.json").write_text(json.dumps({"grouped_split": None}))
    assert leakage.load_near_misses(3, tmp_path) is None
    assert leakage.load_near_misses(3, tmp_path / "nowhere") is None


# ------------------------------------------------------------------ the stricter grouped split
STRICT_PAIRS = _pairs([("t1", "s1", 0.92, 20),    # linked by the strict correlation only
                       ("t2", "v1", 0.50, 9),     # linked by the strict pHash only
                       ("t3", "s2", 0.50, 12),    # linked only if pHash 12 counted
                       ("s1", "t3", 0.30, 11),    # likewise
                       ("s1", "s2", 0.86, 30)])   # never linked


def test_strict_split_links_at_the_lower_thresholds_and_keeps_groups_whole():
    man, info = leakage.strict_split(_fp(), STRICT_PAIRS, seed=1, targets={"test": 2, "val": 2})
    where = dict(zip(man["name"], man["split"]))
    assert where["t1"] == where["s1"] and where["t2"] == where["v1"]          # each strict link kept whole
    assert info["groups"] == 4 and info["largest_group"] == 2 and info["max_splits_per_group"] == 1
    assert sum(info["sizes"].values()) == 6 and info["seed"] == 1
    assert info["thresholds"] == {"thumbnail_corr_min": 0.90, "phash_max_hamming": 10}
    # at pHash <= 12 the links would chain t1, s1, t3 and s2 into one group
    assert info["largest_group_at_phash_max"] == {"phash_max_hamming": 12, "images": 4}
    assert info["manifest"].endswith("grouped_strict_seed1.csv")
    assert not STRICT_PAIRS["dup"].any()            # the caller's flags (the audit's) are left as they were
    # its near misses are counted below its own thresholds
    assert [(r["signal"], r["from"], r["to"]) for r in info["below_thresholds"]] == [
        ("corr", 0.80, 0.90), ("corr", 0.85, 0.90), ("phash", 11, 12)]


def test_near_misses_at_other_thresholds_skip_the_pairs_those_link():
    official = pd.DataFrame({"name": NAMES, "split": OFFICIAL})
    audit = leakage.near_misses(STRICT_PAIRS, official).set_index(["signal", "from"])["cross_split_pairs"]
    assert audit[("corr", 0.90)] == 1 and audit[("phash", 7)] == 3        # t1-s1 at 0.92; t2-v1, t3-s2, s1-t3
    strict = flag_pairs(STRICT_PAIRS.copy(), 0.90, 10)
    got = leakage.near_misses(strict, official, (0.80, 0.85), 0.90, 10).set_index(["signal", "from"])
    assert got["to"].tolist() == [0.90, 0.90, 12]
    # t1-s1 (0.92) and t2-v1 (pHash 9) are links now; s1-s2 is within TEST; t3-s2 and s1-t3 remain
    assert got["cross_split_pairs"].tolist() == [0, 0, 2]
    assert got.loc[("phash", 11), "test_images_with_train_partner"] == 2
    with pytest.raises(ValueError, match=r"bands must lie in \[0.8, 0.9\)"):
        leakage.near_misses(strict, official, (0.80, 0.90), 0.90, 10)


def test_summary_keeps_the_strict_split_and_the_near_miss_table_lists_it(tmp_path):
    labels = np.zeros(len(NAMES), int)
    manifest = pd.DataFrame({"name": NAMES, "group": labels, "split": ["train"] * 6})
    _, strict = leakage.strict_split(_fp(), PAIRS, seed=0, targets={"test": 2, "val": 1})
    s = leakage.summarize_leakage(_fp(), PAIRS, labels, manifest, seed=0, strict=strict)
    assert s["grouped_strict_split"] is strict
    table = leakage.near_miss_table(s)
    assert table["split"].unique().tolist() == ["grouped", "grouped_strict", "official"]
    assert "grouped_strict" not in leakage.near_miss_table(
        leakage.summarize_leakage(_fp(), PAIRS, labels, manifest, seed=0))["split"].tolist()
    (tmp_path / "leakage.json").write_text(json.dumps(s))
    assert leakage.load_near_misses(0, tmp_path, "grouped_strict") == strict["below_thresholds"]
    assert leakage.load_near_misses(0, tmp_path) == s["grouped_split"]["below_thresholds"]


# ------------------------------------------------------------------ mirrored copies
def _slice(seed: int = 0) -> np.ndarray:
    """An asymmetric 'scan': smooth noise plus a bright blob in one quadrant."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 1, (96, 80)).cumsum(0).cumsum(1)
    img[10:30, 50:70] += 400
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


@pytest.mark.parametrize("flip, mirror", [("lr", np.fliplr), ("ud", np.flipud),
                                          ("lrud", lambda a: np.flipud(np.fliplr(a)))])
def test_mirrored_copy_is_a_near_duplicate(flip, mirror):
    """A mirrored copy of a slice (Br35H holds many) scores far below the thresholds against
    the plain image, and is found against its mirror image."""
    from brainseg_lib.data.duplicates import fingerprint_images, nearest_in, pair_table
    a, other = _slice(0), _slice(5)
    fp = fingerprint_images([a, np.ascontiguousarray(mirror(a)), other], ["a", "a_mirror", "b"], "train")
    pairs = pair_table(fp, min_corr=-1.0).set_index(["a", "b"])
    row = pairs.loc[("a", "a_mirror")]
    assert row["corr_plain"] < 0.95 and not row["dup_plain"]       # what the old audit saw
    assert row["corr"] > 0.999 and row["phash_dist"] == 0 and row["dup"] and row["flip"] == flip
    assert not pairs.loc[("a", "b"), "dup"]                         # a different slice stays apart
    near = nearest_in(fingerprint_images([np.ascontiguousarray(mirror(a))], ["q"]),
                      fingerprint_images([other, a], ["b", "a"])).iloc[0]
    assert near["nearest"] == "a" and near["dup"]


def test_mirrored_counts_and_partners_across_count_what_mirroring_adds():
    pairs = _pairs([("t1", "s1", 0.97, 20), ("t2", "v1", 0.99, 0), ("t3", "s2", 0.96, 2),
                    ("t1", "t2", 0.96, 2)], mirrored={("t2", "v1"), ("t3", "s2")})
    official = pd.DataFrame({"name": NAMES, "split": OFFICIAL})
    got = leakage.mirrored_counts(pairs, official)
    assert got == {"cross_split_pairs": 3, "cross_split_pairs_added_by_mirroring": 2,
                   "test_images_with_train_partner": 2, "test_images_with_only_mirrored_train_partner": 1,
                   "val_images_with_train_partner": 1, "val_images_with_only_mirrored_train_partner": 1}
    assert leakage.partners_across(pairs, official) == {"test": 2, "train": 3, "val": 1}
    assert leakage.partners_across(pairs, official, "dup_plain") == {"test": 1, "train": 1, "val": 0}
    whole = pd.DataFrame({"name": NAMES, "split": ["train", "train", "test", "train", "train", "test"]})
    assert leakage.partners_across(pairs, whole) == {"test": 0, "train": 0}


@pytest.mark.realdata
def test_committed_splits_have_no_plain_or_mirrored_partner_across(real_root):
    """After the flip-aware regrouping, no image of a committed grouped split has a plain or
    mirrored near-duplicate (at that split's thresholds) in another of its splits, and no
    healthy val or report scan has one among the healthy train scans (or val, for report)."""
    from brainseg_lib.data import duplicates, healthy, splits
    from brainseg_lib.data.br35h import NO, data_root
    fp = duplicates.fingerprints(real_root)
    pairs = duplicates.pair_table(fp)
    strict = duplicates.flag_pairs(pairs.copy(), duplicates.STRICT_CORR_THRESHOLD,
                                   duplicates.STRICT_PHASH_THRESHOLD)
    for scheme, flagged in (("grouped", pairs), ("grouped_strict", strict)):
        man = splits.load_manifest(0, scheme)
        assert set(man["name"]) == set(fp.names)
        assert set(leakage.partners_across(flagged, man).values()) == {0}, scheme
    man = healthy.load_manifest(0)
    _, hfp = duplicates.read_scans(data_root(real_root) / NO, list(man["name"]), 16, fingerprint=True,
                                   progress=False)
    hpairs = duplicates.flag_pairs(duplicates.pair_table(hfp), healthy.LINK_CORR, healthy.LINK_PHASH)
    roles = man.rename(columns={"role": "split"})
    assert set(leakage.partners_across(hpairs, roles).values()) == {0}
    assert (roles["split"].value_counts()[["train", "val"]] >= [500, 300]).all()
