"""brainseg_lib.detection (image-level tumour detection) and the leakage helpers it uses."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_fake_br35h, write_image
from PIL import Image

from brainseg_lib.data import br35h as data_br35h
from brainseg_lib.data import duplicates as leakage
from brainseg_lib.data import files, healthy
from brainseg_lib.data import images as data_images
from brainseg_lib.detection import figures, roc, tables
from brainseg_lib.detection import scores as detection_scores
from brainseg_lib.detection import summary as detection_summary
from brainseg_lib.evaluation import metrics
from brainseg_lib.model.unet import UNet
from brainseg_lib.report import findings

torch.set_num_threads(1)
sklearn_metrics = pytest.importorskip("sklearn.metrics")

SIZE = 32


# --------------------------------------------------------------------- metrics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_roc_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.4 * y, 1)          # heavy ties
    s[:40] = 0.0
    assert roc.auc_score(s, y) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc.roc_points(s, y)
    f2, t2, th2 = sklearn_metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])
    assert np.isinf(thr[0])


def test_auc_extremes():
    assert roc.auc_score([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc.auc_score([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc.auc_score([0.5] * 4, [0, 0, 1, 1]) == 0.5
    assert np.isnan(roc.auc_score([0.1, 0.2], [1, 1]))


def test_choose_threshold_maximises_youden_j():
    s = np.array([0.0, 0.0, 0.1, 0.2, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    c = roc.choose_threshold(s, y)
    assert c["youden_j"] == 1.0 and 0.2 < c["threshold"] < 0.6
    assert c["threshold"] == pytest.approx(0.4)             # midway between the classes
    # a negative among the positives: 0.25 (sens 1, spec 2/3) and 0.65 (sens 2/3, spec 1)
    # tie at J = 2/3, and the tie goes to the lower threshold
    c = roc.choose_threshold([0.1, 0.3, 0.5, 0.2, 0.8, 0.9], [0, 1, 0, 0, 1, 1])
    assert c["threshold"] == pytest.approx(0.25) and c["youden_j"] == pytest.approx(2 / 3)
    assert (c["sensitivity"], c["specificity"]) == (1.0, pytest.approx(2 / 3))
    # without the tie, J picks the other side
    c = roc.choose_threshold([0.1, 0.3, 0.5, 0.2, 0.8, 0.9, 0.4], [0, 1, 0, 0, 1, 1, 0])
    assert c["threshold"] == pytest.approx(0.65) and c["youden_j"] == pytest.approx(2 / 3)
    # all scores equal: J = 0 everywhere, the lowest candidate (everything positive) wins the tie
    c = roc.choose_threshold([0.0, 0.0, 0.0], [0, 1, 1])
    assert c["youden_j"] == 0.0 and c["threshold"] < 0.0


def test_evaluate_scores_counts_rates_and_cis():
    s = np.r_[np.linspace(0.3, 1, 50), np.linspace(0, 0.6, 50)]
    y = np.r_[np.ones(50), np.zeros(50)]
    m = roc.evaluate_scores(s, y, 0.5, n_boot=300)
    assert (m["tp"], m["fn"]) == ((s[:50] >= 0.5).sum(), (s[:50] < 0.5).sum())
    assert (m["fp"], m["tn"]) == ((s[50:] >= 0.5).sum(), (s[50:] < 0.5).sum())
    assert m["sensitivity"] == pytest.approx(m["tp"] / 50)
    assert m["specificity"] == pytest.approx(m["tn"] / 50)
    assert m["accuracy"] == pytest.approx((m["tp"] + m["tn"]) / 100)
    assert m["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, s))
    for k in detection_scores.RATES:
        lo, hi = m["ci95"][k]
        assert lo <= m[k] <= hi and hi - lo > 0, k
    perfect = roc.evaluate_scores([0.9, 0.8, 0.1], [1, 1, 0], 0.5, n_boot=50)
    assert perfect["ci95"]["auc"] == [1.0, 1.0]


def test_healthy_split_takes_whole_groups_and_is_seeded():
    names = [f"no{i}.jpg" for i in range(12)]
    groups = {n: i // 3 for i, n in enumerate(names)}          # four groups of three
    man = healthy.draw_manifest(names, groups, seed=0, val_size=6, train_pool=3)
    assert sorted(man["name"]) == sorted(names)
    assert (man.groupby("role").size() == pd.Series({"report": 3, "train": 3, "val": 6})).all()
    assert (man.groupby("group")["role"].nunique() == 1).all()        # no group spans two roles
    again = healthy.draw_manifest(list(reversed(names)), groups, seed=0, val_size=6, train_pool=3)
    pd.testing.assert_frame_equal(man, again)
    other = healthy.draw_manifest(names, groups, seed=1, val_size=6, train_pool=3)
    assert set(other.loc[other.role == "val", "name"]) != set(man.loc[man.role == "val", "name"])
    # only whole groups: room for 5 takes one group of 3
    assert (healthy.draw_manifest(names, groups, 0, val_size=5, train_pool=0).role == "val").sum() == 3


def test_natural_order():
    assert files.natural_key("no2.jpg") < files.natural_key("no10.jpg")


# --------------------------------------------------------------------- a fake Br35H with yes/ and no/
def pattern(kind: int, h: int = 48, w: int = 48) -> np.ndarray:
    """Images that are not near-duplicates of each other or of conftest's scans."""
    yy, xx = np.mgrid[:h, :w]
    if kind == 0:
        img = (yy * 255 / h)
    elif kind == 1:
        img = ((xx // 6 + yy // 6) % 2) * 200 + 20
    elif kind == 2:
        img = 255 - xx * 255 / w
    elif kind == 3:
        img = np.hypot(yy - h / 4, xx - 3 * w / 4) * 4
    else:
        img = np.random.default_rng(kind).integers(0, 255, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def detection_root(tmp_path, monkeypatch):
    root = build_fake_br35h(tmp_path / "br35h")
    yes, no = root / "yes", root / "no"
    yes.mkdir()
    no.mkdir()
    for split in data_br35h.SPLITS:                      # the annotated images, copied byte for byte
        for f in data_br35h.split_dir(split, root).iterdir():
            if f.suffix != ".json":
                shutil.copyfile(f, yes / f.name)
    # unseen tumour scans: a re-sized, re-encoded TRAIN image (a near-duplicate) and two others
    y0 = data_images.read_grayscale(data_br35h.split_dir("train", root) / "y0.jpg")
    Image.fromarray(y0).resize((90, 60), Image.BILINEAR).save(yes / "y900.jpg", quality=80)
    # and one of a VAL image (VAL chose the checkpoint and the thresholds)
    v0 = sorted(p for p in data_br35h.split_dir("val", root).iterdir() if p.suffix != ".json")[0]
    Image.fromarray(data_images.read_grayscale(v0)).resize((80, 70), Image.BILINEAR).save(
        yes / "y901.jpg", quality=80)
    write_image(yes / "y902.jpg", pattern(3))
    for kind, name in zip((0, 8, 5, 6, 7), ["no0.jpg", "no1.jpg", "No2.jpg", "no3.jpg", "no10.jpg"]):
        write_image(no / name, pattern(kind))
    monkeypatch.setenv("BRAINSEG_SPLITS", str(tmp_path / "splits"))
    healthy.write_manifest(healthy.build_manifest(0, root, val_size=2, train_pool=0))
    return root


def test_inventory_finds_the_unseen_scans_and_checks_identity(detection_root):
    inv = detection_scores.inventory(detection_root)
    assert inv.positives == ["y900.jpg", "y901.jpg", "y902.jpg"]
    assert inv.negatives == ["no0.jpg", "no1.jpg", "No2.jpg", "no3.jpg", "no10.jpg"]
    c = inv.checks
    assert c["annotated_images"] == c["annotated_with_yes_namesake"] == 8
    assert c["byte_identical_to_yes_namesake"] == 8 and c["differing_from_yes_namesake"] == []
    assert c["first_unseen"] == "y900.jpg" and c["last_unseen"] == "y902.jpg"
    assert c["unseen_byte_copies_of_annotated"] == [] and c["no_byte_copies_of_unseen_yes"] == []


def test_inventory_reports_differences_and_copies(detection_root):
    yes, no = detection_root / "yes", detection_root / "no"
    write_image(yes / "y1.png", pattern(4, 64, 64))                    # no longer the annotated file
    shutil.copyfile(yes / "y2.jpg", yes / "y903.jpg")                  # an annotated image, renamed
    shutil.copyfile(yes / "y901.jpg", no / "no11.jpg")                 # a tumour scan filed as healthy
    (yes / "y701.jpg").unlink()
    c = detection_scores.inventory(detection_root).checks
    assert c["differing_from_yes_namesake"] == ["y1.png"]
    assert c["annotated_missing_from_yes"] == ["y701.jpg"]
    assert c["byte_identical_to_yes_namesake"] == 6
    assert c["unseen_byte_copies_of_annotated"] == ["y903.jpg"]
    assert c["no_byte_copies_of_unseen_yes"] == ["no11.jpg"]


def test_nearest_in_flags_resized_copies_only(detection_root):
    train = leakage.fingerprints(detection_root, splits=("train",))
    again = leakage.fingerprint_images(
        [data_images.read_grayscale(data_br35h.split_dir("train", detection_root) / n) for n in train.names], train.names)
    np.testing.assert_array_equal(again.thumbs, train.thumbs)      # the same recipe as the audit
    np.testing.assert_array_equal(again.hashes, train.hashes)
    names = ["y900.jpg", "y901.jpg", "y902.jpg"]
    q = leakage.fingerprint_images([data_images.read_grayscale(detection_root / "yes" / n) for n in names], names)
    near = leakage.nearest_in(q, train).set_index("name")
    assert near.loc["y900.jpg", "nearest"] == "y0.jpg" and near.loc["y900.jpg", "dup"]
    assert near.loc["y900.jpg", "corr"] > 0.95
    assert not near.loc["y901.jpg", "dup"] and not near.loc["y902.jpg", "dup"]
    assert list(near.columns) == ["nearest", "corr", "phash_dist", "dup_corr", "dup_phash", "dup"]


def test_collect_summarize_and_write(detection_root, tmp_path):
    torch.manual_seed(0)
    net = UNet(base=4).eval()
    scores, info = detection_scores.collect_scores(net, SIZE, root=detection_root)
    counts = scores.groupby(["role", "folder", "label"]).size().to_dict()
    assert counts == {("report", "no", 0): 3, ("report", "yes", 1): 3,
                      ("val", "VAL", 1): 2, ("val", "no", 0): 2}
    held = info["holdout"]["names"]
    assert set(held) == set(scores.loc[(scores.role == "val") & (scores.folder == "no"), "name"])
    assert not set(held) & set(scores.loc[scores.role == "report", "name"])
    assert scores[["max_prob", "area_frac"]].apply(lambda c: c.between(0, 1).all()).all()
    assert (scores["area_frac"] <= 1).all()
    dup = scores.loc[scores.near_dup_train, "name"].tolist()
    assert dup == ["y900.jpg"]
    assert scores.loc[scores.near_dup_val, "name"].tolist() == ["y901.jpg"]
    assert not scores["near_dup_holdout"].any()
    # the CSV round trip the notebook relies on
    path = tmp_path / "scores.csv"
    scores.to_csv(path, index=False)
    scores = pd.read_csv(path)
    summary = detection_summary.summarize_detection(scores, info, n_boot=50)
    json.dumps(summary, allow_nan=False)
    assert summary["primary_score"] == "area_frac"
    assert summary["validation"] == {**summary["validation"], "positives": 2, "negatives": 2}
    assert summary["near_duplicates_of_train"]["total"] == 1
    assert summary["report"]["all"]["area_frac"]["images"] == 6
    assert summary["near_duplicates_of_val"] == {"positives": 1, "negatives": 0, "total": 1, "of": 6}
    assert summary["report"]["without_near_duplicates"]["max_prob"]["images"] == 4   # y900, y901 out
    t = tables.detection_table(summary)
    assert list(t.columns[:8]) == list(tables.TABLE_COLUMNS) and len(t) == 3
    assert "sensitivity >= 0.9" in t["Task"].iloc[2]
    written = tables.write_table(t, tmp_path)
    assert written["md"].read_text().startswith("| Task | Images |")
    words = findings.detection_findings(summary)
    assert "AUC" in words
    bg = summary["report"]["all"]["area_frac"]["bootstrap_groups"]
    assert f"({bg['positives']} tumour and {bg['negatives']} healthy groups" in words
    cmp = tables.ci_comparison(summary)
    assert len(cmp) == 2 * len(detection_scores.RATES)
    row = cmp[(cmp.subset == "all") & (cmp.figure == "auc")].iloc[0]
    m = summary["report"]["all"]["area_frac"]
    assert [row["group CI low"], row["image CI high"]] == [m["ci95"]["auc"][0], m["ci95_images"]["auc"][1]]
    for fig in (figures.roc_figure(scores, summary), figures.confusion_figure(summary),
                figures.score_histogram(scores, summary)):
        assert fig.axes and any(ax.has_data() for ax in fig.axes)   # something was drawn
    rows = figures.gallery_rows(scores, summary, "missed")
    fig = figures.gallery(rows, net, SIZE, "m", root=detection_root)
    assert sum(len(ax.images) for ax in fig.axes) == len(rows)      # one scan per missed tumour


def test_a_released_files_settings_change_the_scores_as_predict_applies_them(detection_root):
    from brainseg_lib.data.head_crop import framed
    from brainseg_lib.inference import drop_small_components, predict_probabilities_tta
    torch.manual_seed(0)
    net = UNet(base=4).eval()
    plain, _ = detection_scores.collect_scores(net, SIZE, root=detection_root)
    frame, images, info = detection_scores.detection_inputs(SIZE, root=detection_root, head_crop=True)
    crops = np.stack([data_images.resize_image(framed(data_images.read_grayscale(detection_root / "no" / n), None, True)[0], SIZE)
                      for n in frame.loc[(frame.folder == "no"), "name"]])
    assert np.array_equal(images[(frame.folder == "no").to_numpy()], crops)     # cropped to the head
    assert info["head_crop"] and frame["near_dup_train"].equals(plain["near_dup_train"])
    got, info = detection_scores.collect_scores(net, SIZE, threshold=0.4, inputs=(frame, images, info),
                                                tta=True, min_component=0.01)
    probs = drop_small_components(predict_probabilities_tta(net, images), 0.4, 0.01)
    assert np.allclose(got["area_frac"], (probs >= 0.4).mean(axis=(1, 2)))
    assert np.allclose(got["max_prob"], probs.max(axis=(1, 2)), atol=1e-6)
    assert info["tta"] and info["min_component"] == 0.01 and info["pixel_threshold"] == 0.4


def test_a_copy_of_a_negative_stays_on_its_side(detection_root):
    no = detection_root / "no"
    src = data_images.read_grayscale(no / "no1.jpg")
    Image.fromarray(src).resize((70, 70), Image.BILINEAR).save(no / "no99.jpg", quality=85)
    with pytest.raises(ValueError, match="healthy-split"):     # the split no longer lists no/
        detection_scores.collect_scores(UNet(base=4).eval(), SIZE, root=detection_root)
    healthy.write_manifest(healthy.build_manifest(0, detection_root, val_size=2, train_pool=0))
    scores, info = detection_scores.collect_scores(UNet(base=4).eval(), SIZE, root=detection_root)
    held = info["holdout"]["names"]
    assert ("no1.jpg" in held) == ("no99.jpg" in held)
    assert not scores["near_dup_holdout"].any()
    assert info["no_groups"]["groups_with_duplicates"] == 1 and info["no_groups"]["largest"] == 2
    summary = detection_summary.summarize_detection(scores, info, n_boot=20)
    assert summary["near_duplicates_of_holdout"]["total"] == 0


def test_report_scans_carry_their_near_duplicate_group(detection_root):
    """The unit the CIs resample: a re-encoded copy shares its original's group, in yes/ (groups
    among the unseen positives) as in no/ (the healthy split's groups)."""
    yes, no = detection_root / "yes", detection_root / "no"
    y902 = data_images.read_grayscale(yes / "y902.jpg")
    Image.fromarray(y902).resize((70, 75), Image.BILINEAR).save(yes / "y903.jpg", quality=85)
    man = healthy.load_manifest(0)
    report_neg = man.loc[man.role == "report", "name"].tolist()
    src = data_images.read_grayscale(no / report_neg[0])
    Image.fromarray(src).resize((70, 70), Image.BILINEAR).save(no / "no99.jpg", quality=85)
    healthy.write_manifest(healthy.build_manifest(0, detection_root, val_size=2, train_pool=0))
    scores, info = detection_scores.collect_scores(UNet(base=4).eval(), SIZE, root=detection_root)
    g = scores.set_index("name")["dup_group"]
    assert g["y902.jpg"] == g["y903.jpg"] and g["y902.jpg"].startswith("yes/")
    assert len({g["y900.jpg"], g["y901.jpg"], g["y902.jpg"]}) == 3
    pair = [n for n in ("no1.jpg", "no99.jpg", report_neg[0]) if n in g.index and g[n] == g["no99.jpg"]]
    assert len(pair) == 2 and g["no99.jpg"].startswith("no/")
    val_groups = scores.loc[scores.folder == "VAL", "dup_group"]
    assert val_groups.str.startswith("VAL/").all() and val_groups.is_unique
    rep = scores[scores.role == "report"]
    assert info["report_groups"]["positives"] == {"groups": 3, "groups_with_duplicates": 1,
                                                  "scans_in_such_groups": 2, "largest": 2}
    assert info["report_groups"]["negatives"]["groups"] == rep.loc[rep.label == 0, "dup_group"].nunique()
    assert info["cross_class_near_duplicates"] == 0
    summary = detection_summary.summarize_detection(scores, info, n_boot=30)
    m = summary["report"]["all"]["area_frac"]
    assert m["bootstrap_groups"] == {"positives": 3, "negatives": info["report_groups"]["negatives"]["groups"]}
    assert set(m["ci95"]) == set(m["ci95_images"]) == set(detection_scores.RATES)
    # the group CI is the cluster bootstrap of exactly these groups; the image CI ignores them
    want = roc.evaluate_scores(rep["area_frac"], rep["label"], m["threshold"], 30, 0, rep["dup_group"])
    assert m["ci95"] == want["ci95"] and m["ci95_images"] == want["ci95_images"]
    assert m["ci95_images"] == roc.evaluate_scores(rep["area_frac"], rep["label"], m["threshold"], 30)["ci95"]


def test_limit_takes_the_first_scans_of_each_class(detection_root):
    net = UNet(base=4).eval()
    scores, info = detection_scores.collect_scores(net, SIZE, root=detection_root, limit=1)
    rep = scores[scores.role == "report"]
    assert rep["name"].tolist()[0] == "y900.jpg" and len(rep) == 2
    assert info["limit_per_class"] == 1


def test_image_scores_are_max_and_area():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):          # logit +10 on the top-left quadrant of image 0 only
            out = torch.full_like(x, -10.0)
            out[0, :, :8, :8] = 10.0
            return out
    s = detection_scores.image_scores(Fixed(), np.zeros((2, 16, 16), np.uint8))
    assert s["area_frac"].tolist() == [0.25, 0.0]
    assert s["max_prob"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    assert s["max_prob"].iloc[1] == pytest.approx(0.0, abs=1e-4)


def test_fixed_sensitivity_threshold_and_roc_specificity():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.35, 0.05])
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    # 10 positives: sensitivity >= 0.9 needs 9 of them, the highest such threshold is 0.15
    t = roc.threshold_at_sensitivity(s, y, 0.9)
    assert t["threshold"] == pytest.approx(0.15) and t["sensitivity"] == pytest.approx(0.9)
    assert t["specificity"] == pytest.approx(0.5)               # 0.35 >= 0.15 is a false alarm
    # on the ROC: at sensitivity >= 0.9 the best specificity is 0.5 (0.35 ranks above two positives)
    assert roc.specificity_at_sensitivity(s, y, 0.9) == pytest.approx(0.5)
    assert roc.specificity_at_sensitivity([0.9, 0.8, 0.1], [1, 1, 0], 0.9) == 1.0
    p = detection_summary.operating_points(pd.DataFrame({"role": ["val"] * 12 + ["report"] * 12, "label": np.r_[y, y],
                                                 "area_frac": np.r_[s, s]}))
    assert p["fixed_sensitivity_threshold"] == pytest.approx(0.15)
    assert p["fixed_sensitivity_sensitivity"] == pytest.approx(0.9)
    assert p["auc"] == pytest.approx(roc.auc_score(s, y))


def test_run_operating_points_reads_the_healthy_split(detection_root):
    net = UNet(base=4).eval()
    p = detection_summary.run_operating_points(net, SIZE, root=detection_root)
    assert (p["report_positives"], p["report_negatives"]) == (3, 3)
    assert (p["val_positives"], p["val_negatives"]) == (2, 2)
    assert 0 <= p["auc"] <= 1 and p["primary_score"] == "area_frac"


def test_operating_points_choose_on_the_runs_own_val(detection_root):
    """A grouped-split run chose its checkpoint on its own VAL: the thresholds are chosen
    there, not on the official VAL (whose images such a run may have trained on)."""
    from brainseg_lib.data.cache import load_named, load_split
    own = load_named(["y0.jpg", "y1.png", "y2.jpg"], SIZE, "val", detection_root)
    frame, images = detection_summary.operating_point_inputs(SIZE, detection_root, val_arrays=own)
    val_pos = frame[(frame.role == "val") & (frame.label == 1)]
    assert val_pos["name"].tolist() == own.names
    np.testing.assert_array_equal(images[:3], own.images)
    official = load_split("val", SIZE, root=detection_root)
    frame, _ = detection_summary.operating_point_inputs(SIZE, detection_root)
    assert frame.loc[(frame.role == "val") & (frame.label == 1), "name"].tolist() == official.names
    p = detection_summary.run_operating_points(UNet(base=4).eval(), SIZE, root=detection_root, val_arrays=own)
    assert p["val_positives"] == 3
    with pytest.raises(ValueError, match="model's input"):
        detection_summary.operating_point_inputs(SIZE, detection_root,
                                                 val_arrays=load_named(["y0.jpg"], SIZE * 2, "val", detection_root))


def test_seed_markdown_gives_mean_and_sd():
    seeds = pd.DataFrame({c: [0.8, 1.0] for c in tables.SEED_COLUMNS})
    md = tables.seed_markdown(seeds)
    assert "mean ± sd over 2 seeds" in md and "| AUC | 0.900 ± 0.141 |" in md
    assert "No seed sweep" in tables.seed_markdown(pd.DataFrame())


def test_seed_table_reads_untagged_official_runs(tmp_path):
    m = tmp_path / "metrics"
    m.mkdir()
    det = {k: 0.5 for k in tables.SEED_COLUMNS}
    for name, tag, scheme in (("a", None, "official"), ("b", "annotated-only", "official"), ("c", None, "grouped")):
        (m / f"{name}.json").write_text(json.dumps({
            "kind": "segmentation_run", "run_name": name, "profile": "cpu", "split_scheme": scheme,
            "loss": "bce_dice", "seed": 0, "run_tag": tag, "detection": det}))
    t = detection_summary.seed_table("cpu", "bce_dice", sweep_dir=tmp_path)
    assert list(t["run_name"]) == ["a"]


def test_rates_are_nan_for_a_class_without_images():
    r = roc.rates(tp=3, fp=0, fn=1, tn=0)                # no negatives at all
    assert r["sensitivity"] == 0.75 and np.isnan(r["specificity"]) and r["accuracy"] == 0.75
    assert all(np.isnan(v) for v in roc.rates(0, 0, 0, 0).values())
    # the segmentation formulas, not a copy: sensitivity is recall
    m = metrics.metrics_from_counts(5, 2, 3, 7)
    assert roc.rates(5, 2, 3, 7) == {"sensitivity": m["recall"], "specificity": m["specificity"],
                                     "accuracy": m["accuracy"]}


def test_evaluate_scores_cis_are_the_class_stratified_replicate_loop():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(9), np.zeros(6)].astype(bool)
    s = rng.random(15) + 0.4 * y
    got = roc.evaluate_scores(s, y, 0.6, n_boot=40, seed=3)["ci95"]
    # by hand: each replicate draws the positives, then the negatives, within class
    draw = np.random.default_rng(3)
    boot = {k: [] for k in detection_scores.RATES}
    for _ in range(40):
        bp = s[y][draw.integers(0, 9, 9)]
        bn = s[~y][draw.integers(0, 6, 6)]
        tp, tn = int((bp >= 0.6).sum()), int((bn < 0.6).sum())
        boot["sensitivity"].append(tp / 9)
        boot["specificity"].append(tn / 6)
        boot["accuracy"].append((tp + tn) / 15)
        boot["auc"].append(sklearn_metrics.roc_auc_score(np.r_[np.ones(9), np.zeros(6)], np.r_[bp, bn]))
    for k, v in boot.items():
        assert got[k][0] == pytest.approx(np.quantile(v, 0.025), abs=1e-12), k
        assert got[k][1] == pytest.approx(np.quantile(v, 0.975), abs=1e-12), k
    # one class only: nothing to resample, NaN CIs
    one = roc.evaluate_scores([0.2, 0.7], [1, 1], 0.5, n_boot=20)
    assert one["sensitivity"] == 0.5 and np.isnan(one["specificity"])
    assert all(np.isnan(v).all() for v in one["ci95"].values())
    assert all(np.isnan(v).all() for v in roc.evaluate_scores([0.2, 0.7], [1, 1], 0.5, 20, 0, [0, 0])["ci95"].values())


def test_group_ci_resamples_whole_groups():
    """By hand: each replicate draws, within each class, as many groups as the class has and
    takes every scan of each drawn group."""
    y = np.r_[np.ones(5), np.zeros(6)].astype(bool)
    s = np.array([0.9, 0.9, 0.9, 0.2, 0.7, 0.1, 0.1, 0.8, 0.8, 0.3, 0.05])
    g = np.array(["a", "a", "a", "b", "c", "d", "d", "e", "e", "f", "g"])
    got = roc.evaluate_scores(s, y, 0.5, n_boot=60, seed=5, groups=g)
    assert got["bootstrap_groups"] == {"positives": 3, "negatives": 4}
    members = {"pos": [s[[0, 1, 2]], s[[3]], s[[4]]], "neg": [s[[5, 6]], s[[7, 8]], s[[9]], s[[10]]]}
    draw = np.random.default_rng(5)
    sens, spec, auc = [], [], []
    for _ in range(60):
        bp = np.concatenate([members["pos"][i] for i in draw.integers(0, 3, 3)])
        bn = np.concatenate([members["neg"][i] for i in draw.integers(0, 4, 4)])
        sens.append((bp >= 0.5).mean())
        spec.append((bn < 0.5).mean())
        auc.append(sklearn_metrics.roc_auc_score(np.r_[np.ones(len(bp)), np.zeros(len(bn))], np.r_[bp, bn]))
    for k, v in (("sensitivity", sens), ("specificity", spec), ("auc", auc)):
        assert got["ci95"][k] == pytest.approx([np.quantile(v, 0.025), np.quantile(v, 0.975)], abs=1e-12), k
    # the point figures do not depend on the groups
    plain = roc.evaluate_scores(s, y, 0.5, n_boot=60, seed=5)
    assert {k: got[k] for k in ("sensitivity", "specificity", "auc", "tp", "fp")} == \
        {k: plain[k] for k in ("sensitivity", "specificity", "auc", "tp", "fp")}
    assert got["ci95_images"] == plain["ci95"] and "ci95_images" not in plain


def test_cross_class_near_duplicates_are_counted():
    """A tumour scan and a near-copy of it among the healthy report scans cannot share a
    bootstrap unit (the bootstrap is stratified by class); they are counted instead."""
    a, b, c = pattern(3), pattern(5), pattern(6)
    a_copy = np.asarray(Image.fromarray(a).resize((70, 66), Image.BILINEAR))
    pos = leakage.fingerprint_images([a, b], ["p1", "p2"])
    neg = leakage.fingerprint_images([a_copy, c], ["n1", "n2"])
    frame = pd.DataFrame({"name": ["p1", "p2", "n1", "n2"], "label": [1, 1, 0, 0], "role": "report",
                          "dup_group": ["yes/0", "yes/1", "no/0", "no/0"]})
    got = detection_scores._report_group_info(frame, pos, neg)
    assert got["cross_class_near_duplicates"] == 1
    assert got["report_groups"]["negatives"] == {"groups": 1, "groups_with_duplicates": 1,
                                                 "scans_in_such_groups": 2, "largest": 2}
    empty = leakage.fingerprint_images([], [])
    assert detection_scores._report_group_info(frame, pos, empty)["cross_class_near_duplicates"] == 0


def test_pad_to_square_centres_without_stretch():
    from brainseg_lib.detection.shortcut import pad_to_square
    img = np.arange(6, dtype=np.uint8).reshape(2, 3) + 1
    out = pad_to_square(img)
    assert out.shape == (3, 3) and (out[0] == img[0]).all() and (out[1] == img[1]).all() and not out[2].any()
    assert pad_to_square(img.T).shape == (3, 3) and (pad_to_square(img.T)[:, 0] == img.T[:, 0]).all()


def test_shortcut_control_scores_shape_alone_and_padded_scans(detection_root):
    """Tumour scans made wide and healthy ones square: the aspect ratio alone separates them
    (its direction taken from validation), and the padded scores come from the same model."""
    from brainseg_lib.detection import shortcut
    for p in (detection_root / "yes").iterdir():
        Image.fromarray(data_images.read_grayscale(p)).resize((90, 45)).save(p)
    for p in (detection_root / "no").iterdir():
        Image.fromarray(data_images.read_grayscale(p)).resize((50, 50)).save(p)
    healthy.write_manifest(healthy.build_manifest(0, detection_root, val_size=2, train_pool=0))
    net = UNet(base=4).eval()
    scores, _ = detection_scores.collect_scores(net, SIZE, root=detection_root)
    control, frame = shortcut.shortcut_control(net, SIZE, scores, root=detection_root, n_boot=20)
    rep = frame[frame["role"] == "report"]
    assert (rep.loc[rep["folder"] == "yes", "aspect"] == 2.0).all() and (rep.loc[rep["folder"] == "no", "aspect"] == 1.0).all()
    a = control["aspect_ratio_only"]      # the shape alone separates the report scans perfectly, in the
    assert a["auc"] == (1.0 if a["score"] == "width / height" else 0.0)   # direction validation chose
    assert control["model"]["auc"] == pytest.approx(roc.auc_score(rep["area_frac"], rep["label"]))
    assert len(frame) == len(scores) and frame["area_frac_padded"].between(0, 1).all()
    assert "Shortcut control: the aspect ratio alone" in findings.shortcut_sentence(control)
    assert frame["head_box_share"].between(0, 1).all()
    w = control["model_within_framing_strata"]
    assert sum(s["tumour"] + s["healthy"] for s in w["strata"]) == len(rep)
    assert "Framing control: the head's box covers" in findings.shortcut_sentence(control)


def test_framing_strata_are_quartiles_of_the_share():
    from brainseg_lib.detection.shortcut import framing_strata
    assert list(framing_strata([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(framing_strata([0.5, 0.5, 0.5, 0.9])) == [0, 0, 0, 3]     # ties stay together


def test_matched_auc_counts_only_pairs_framed_alike():
    """Tumour scans framed tight and scoring high, healthy ones loose and scoring low: the plain AUC
    is 1, but inside each stratum the scores are hand-set to reverse or tie."""
    from brainseg_lib.detection.shortcut import matched_auc
    pos = np.array([[0.9, 1], [0.8, 1], [0.3, 0]])          # (score, stratum)
    neg = np.array([[0.95, 1], [0.1, 0], [0.3, 0], [0.05, 2]])
    auc, pairs = matched_auc(pos, neg)
    # stratum 1: 2 x 1 pairs, both lost (0.9, 0.8 < 0.95); stratum 0: 1 x 2 pairs, one won, one tied
    assert pairs == 4 and auc == pytest.approx((0 + 0 + 1 + 0.5) / 4)
    assert np.isnan(matched_auc(pos[:2], neg[1:3])[0])     # no stratum holds both classes


def test_within_framing_resamples_groups_and_reports_strata():
    from brainseg_lib.detection.shortcut import within_framing
    share = np.r_[np.linspace(0.8, 1.0, 8), np.linspace(0.5, 0.85, 8)]
    label = np.r_[np.ones(8), np.zeros(8)]
    score = np.r_[np.linspace(0.6, 0.9, 8), np.linspace(0.1, 0.4, 8)]   # the model separates all
    out = within_framing(score, label, share, [f"g{i}" for i in range(16)], n_boot=50)
    assert out["auc"] == 1.0 and out["ci95"]["auc"] == [1.0, 1.0]
    assert out["all_pairs"] == 64 and 0 < out["pairs"] < 64
    assert [s["tumour"] + s["healthy"] for s in out["strata"]] == [4, 4, 4, 4]
    flipped = within_framing(-score, label, share, [f"g{i}" for i in range(16)], n_boot=50)
    assert flipped["auc"] == 0.0


def test_galleries_show_one_scan_per_group_and_say_what_the_largest_holds():
    from brainseg_lib.detection import figures
    summary = {"primary_score": "area_frac", "report": {"all": {"area_frac": {"threshold": 0.5}}}}
    scores = pd.DataFrame({"name": [f"no{i}.jpg" for i in range(6)] + ["y0.jpg"],
                           "role": "report", "label": [0] * 6 + [1],
                           "area_frac": [0.9, 0.95, 0.8, 0.7, 0.6, 0.1, 0.2], "max_prob": 0.9,
                           "dup_group": ["no/1", "no/1", "no/1", "no/1", "no/2", "no/3", "yes/0"]})
    rows = figures.gallery_rows(scores, summary, "false_alarms", 8)
    assert list(rows["name"]) == ["no1.jpg", "no4.jpg"]                    # one per group, highest first
    note = figures.gallery_note(scores, summary, "false_alarms")
    assert note.startswith("5 false alarms on the report scans, in 2 near-duplicate groups; the gallery "
                           "shows one scan of each of the first 2.")
    assert "holds 4 of them (80%): 4 of its 4 report scans" in note and "`no1.jpg` is shown" in note
    assert "wrong label" in note
    assert "`no1.jpg` is not among those shown" in figures.gallery_note(scores, summary, "false_alarms", 0)
    assert figures.gallery_note(scores, summary, "missed").startswith("1 missed tumour on the report scans, in 1")
    spread = scores.assign(dup_group=[f"no/{i}" for i in range(6)] + ["yes/0"])
    assert "largest" not in figures.gallery_note(spread, summary, "false_alarms")


def test_the_release_evaluations_healthy_report_is_the_same_read_off_the_detection_scores(detection_root):
    """evaluate-release scores the healthy report scans once (detection) and reads their marked
    share off those scores: both paths name the same scans marked, with the release's flips,
    component removal and head crop, at a threshold that marks some of them and not others."""
    from brainseg_lib.study import release_eval
    torch.manual_seed(0)
    net = UNet(base=4).eval()
    inf = {"tta": True, "min_component": 0.01, "head_crop": True}
    frame, images, info = detection_scores.detection_inputs(SIZE, root=detection_root, head_crop=True)
    mixed = []
    from brainseg_lib.inference import predict_probabilities_tta
    for thr in np.quantile(predict_probabilities_tta(net, images), np.linspace(0.5, 0.999, 100)):
        scores, _ = detection_scores.collect_scores(net, SIZE, threshold=thr, inputs=(frame, images, info),
                                                    tta=True, min_component=0.01)
        read_off = release_eval.healthy_report_from_detection(scores)
        if 0 < read_off["marked"] < read_off["n_scans"]:
            mixed.append(float(thr))
            assert release_eval.healthy_report(net, SIZE, float(thr), inf, 0, detection_root) == read_off
            break
    assert mixed, "no threshold marks some report scans and not others: the test compares nothing"
