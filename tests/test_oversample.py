"""Oversampling TRAIN's small tumours (``small_tumour_oversample``, round 11 of the release lever
trials): which images repeat, that an epoch keeps its length, and that the plain order is untouched."""
from __future__ import annotations

import numpy as np
import torch

from brainseg_lib.data.loaders import oversample_pool, resident_batches
from brainseg_lib.training.config import TrainConfig


def masks_with_areas(areas, size=8):
    out = np.zeros((len(areas), 1, size, size), np.uint8)
    for i, a in enumerate(areas):
        out[i].reshape(-1)[:a] = 1
    return torch.from_numpy(out)


def test_pool_repeats_only_the_smallest_quartile_of_tumours():
    # tumour areas 1, 2, 3, 4, 10, 20, 30, 40 and two tumour-free images
    areas = [0, 40, 1, 30, 2, 20, 0, 3, 10, 4]
    pool = oversample_pool(masks_with_areas(areas), 3)
    counts = np.bincount(pool.numpy(), minlength=len(areas))
    # the first quartile of (1,2,3,4,10,20,30,40), interpolated as numpy does, is 2.75:
    # areas 1 and 2 (indices 2 and 4) three times each
    assert np.quantile([1, 2, 3, 4, 10, 20, 30, 40], 0.25) == 2.75
    assert counts.tolist() == [1, 1, 3, 1, 3, 1, 1, 1, 1, 1]
    assert oversample_pool(masks_with_areas(areas), 1) is None
    assert oversample_pool(masks_with_areas([0, 0, 0]), 3) is None          # nothing to oversample


def test_an_epoch_keeps_its_length_and_draws_small_tumours_more_often():
    areas = [0, 40, 1, 30, 2, 20, 0, 3, 10, 4] * 4
    masks = masks_with_areas(areas)
    images = masks * 200
    pool = oversample_pool(masks, 4)
    seen_small, seen_big = 0, 0
    for epoch in range(30):
        batches = list(resident_batches(images, masks, 8, seed=0, epoch=epoch, pool=pool))
        assert sum(len(x) for x, _ in batches) == 40                         # 5 full batches, as without
        for x, y in batches:
            a = y.reshape(len(y), -1).sum(1)
            seen_small += int(((a > 0) & (a <= 3)).sum())
            seen_big += int((a >= 30).sum())
    assert seen_small > 2 * seen_big          # 12 small (8 oversampled 4x) and 8 big images
    plain = [y for _, y in resident_batches(images, masks, 8, seed=0, epoch=3)]
    again = [y for _, y in resident_batches(images, masks, 8, seed=0, epoch=3, pool=None)]
    assert all(torch.equal(a, b) for a, b in zip(plain, again))


def test_the_setting_is_recorded_only_when_used():
    assert "small_tumour_oversample" not in TrainConfig().to_dict()        # earlier runs still match
    assert TrainConfig(small_tumour_oversample=3).to_dict()["small_tumour_oversample"] == 3
    for bad in (0, 11):
        try:
            TrainConfig.from_dict({"small_tumour_oversample": bad})
        except ValueError as e:
            assert "small_tumour_oversample" in str(e)
        else:
            raise AssertionError(f"{bad} was accepted")
