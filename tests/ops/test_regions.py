"""RGC region selection and RGFS scores on hand-made residuals."""

import numpy as np
import pytest

from taplab.ops.regions import (
    PAPER_RGFS_THRESHOLD,
    RateSelector,
    Region,
    candidate_regions,
    region_counts,
    residual_score,
    select_region,
)


def test_paper_grid_at_cityscapes_size():
    regions = candidate_regions(1024, 2048)
    assert {(r.height, r.width) for r in regions} == {(512, 512)}
    assert sorted({r.y for r in regions}) == [0, 256, 512]
    assert sorted({r.x for r in regions}) == list(range(0, 1537, 256))
    assert len(regions) == 3 * 7


def test_regions_cover_the_right_and_bottom_edges():
    regions = candidate_regions(720, 1280, multiple=4)
    assert regions[0].height == 360 and all(r.height % 4 == 0 for r in regions)
    covered = np.zeros((720, 1280), bool)
    for r in regions:
        covered[r.slices()] = True
    assert covered.all()
    assert max(r.x + r.width for r in regions) == 1280 and max(r.y + r.height for r in regions) == 720
    small = candidate_regions(50, 30, size=64, stride=16)
    assert small == [Region(0, 0, 50, 30)]


def test_select_region_finds_where_the_residual_is():
    residual = np.zeros((720, 1280), np.uint8)
    residual[400:560, 1000:1200] = 80  # a moving object near the bottom right
    residual[::7, ::7] = 200  # scattered noise everywhere
    regions = candidate_regions(720, 1280)
    region, count = select_region(residual, regions, threshold=30)
    ys, xs = region.slices()
    assert region.y <= 400 and region.y + region.height >= 560
    assert region.x <= 1000 and region.x + region.width >= 1200
    assert count == int((residual[ys, xs] > 30).sum())
    counts = region_counts(residual, regions, 30)
    assert counts.tolist() == [int((residual[r.slices()] > 30).sum()) for r in regions]


def test_residual_score_and_the_papers_threshold():
    assert residual_score(np.full((4, 4), 6, np.uint8)) == 6.0
    assert PAPER_RGFS_THRESHOLD == pytest.approx(5.72, abs=0.01)


def test_rate_selector_selects_close_to_the_asked_share():
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 3.0, 600)
    selector = RateSelector(0.1)
    chosen = [selector(s) for s in scores]
    assert 0.07 <= np.mean(chosen) <= 0.13
    assert not any(chosen[:4])  # calibrating: a rank in the top tenth needs five scores
    again = RateSelector(0.1)
    assert [again(s) for s in scores] == chosen
    with pytest.raises(ValueError):
        RateSelector(1.5)


def test_rate_selector_does_not_overshoot_on_short_runs():
    """27 candidates (the P-frames of a 30-frame GOP-12 clip), scores in random order: on average
    close to the asked share is selected (a quantile of the scores so far selected 12%)."""
    rng = np.random.default_rng(1)
    shares = []
    for _ in range(400):
        selector = RateSelector(0.1)
        shares.append(np.mean([selector(s) for s in rng.gamma(2.0, 3.0, 27)]))
    assert 0.08 <= np.mean(shares) <= 0.11


def test_rate_selector_keeps_its_share_when_the_residual_drifts_and_picks_the_jumps():
    """A residual rising steadily along a run (ranking the raw scores selected 80% of it) and one with a few
    jumps: the selector ranks each score relative to the ones just before it."""
    rng = np.random.default_rng(3)
    rising = np.linspace(2.0, 8.0, 300) * rng.uniform(0.9, 1.1, 300)
    selector = RateSelector(0.1)
    assert 0.06 <= np.mean([selector(s) for s in rising]) <= 0.14
    raw = RateSelector(0.1, trend=0)
    assert np.mean([raw(s) for s in rising]) > 0.5
    steady = rng.uniform(0.9, 1.1, 200)
    jumps = [40, 90, 150]
    steady[jumps] = 3.0
    selector = RateSelector(0.1)
    chosen = [selector(s) for s in steady]
    assert all(chosen[j] for j in jumps)
    assert selector.relative(2.0) == pytest.approx(2.0 / np.median(steady[-3:]))


@pytest.mark.parametrize("rate", [0.5, 0.9])
def test_rate_selector_at_high_rates_selects_from_the_first_frame_without_failing(rate):
    rng = np.random.default_rng(2)
    selector = RateSelector(rate)
    chosen = [selector(s) for s in rng.gamma(2.0, 3.0, 400)]
    assert chosen[0] and abs(np.mean(chosen) - rate) < 0.05


def test_blend_region_mixes_the_crops_features_into_its_cells_only():
    """TapLab Eq. 3 in place: F = (1 - a) F_warped + a F_cnn on the region's cells; the overhang is dropped."""
    import torch

    from taplab.ops.regions import Region, blend_region

    features = torch.zeros(2, 6, 8)
    crop = torch.ones(2, 4, 4)  # a region of 16x16 pixels at stride 4, its corner at pixel (8, 24)
    blend_region(features, crop, Region(8, 24, 16, 16), (4, 4), 0.75)
    inside = features[:, 2:6, 6:8]
    assert torch.equal(inside, torch.full_like(inside, 0.75))  # rows 2-5, columns 6-7: the rest overhangs
    assert features.sum() == 0.75 * inside.numel()
