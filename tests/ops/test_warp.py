"""FFW on the feature grid: true motion reproduces labels, the sign is right, distortion is flagged."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taplab.codec import open_video
from taplab.data.synth import SynthConfig, generate
from taplab.ops.warp import GridFlow, compose, dense_to_grid, motion_to_grid, warp, zero_flow
from tests.conftest import DX, DY


def one_hot(labels: np.ndarray, classes: int = 19) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(labels.astype(np.int64)).clamp(max=classes - 1), classes).permute(2, 0, 1).float()


def test_true_motion_reproduces_the_labels_and_the_wrong_sign_does_not():
    frames = list(generate(SynthConfig(height=128, width=256, frames=4, seed=3, ego_speed_mps=12, pan_deg_per_s=8)))
    for prev, cur in zip(frames, frames[1:]):
        flow = torch.from_numpy(cur.flow)  # pixels = cells at stride 1
        ok = torch.ones(flow.shape[:2], dtype=torch.bool)
        warped, distorted = warp(one_hot(prev.labels), GridFlow(flow, ok))
        right = (warped.argmax(0).numpy() == cur.labels).mean()
        wrong = (warp(one_hot(prev.labels), GridFlow(-flow, ok))[0].argmax(0).numpy() == cur.labels).mean()
        still = (prev.labels == cur.labels).mean()
        # (what stays wrong is where surfaces appear from behind others: no warp can know them)
        assert right > 0.93, right
        assert right > still + 0.04 and wrong < still - 0.02, (right, still, wrong)


def test_codec_vectors_on_the_feature_grid_have_the_right_sign(translation_clip):
    with open_video(translation_clip) as video:
        frames = [(f.luma.astype(np.float32), f.motion) for f in video][:6]
    stride = 4

    def pooled(luma):
        return F.avg_pool2d(torch.from_numpy(luma)[None, None], stride)[0]

    for (prev, _), (cur, motion) in zip(frames[1:], frames[2:]):
        grid = pooled(cur).shape[-2:]
        flow = motion_to_grid(motion.vectors, motion.valid, motion.block, grid, stride)
        inner = flow.flow[4:-4, 4:-4]
        assert torch.allclose(inner.median(0).values.median(0).values, torch.tensor([DX / stride, DY / stride]))
        target = pooled(cur)[0, 4:-4, 4:-4]
        error = {}
        for name, f in (("right", flow), ("zero", zero_flow(grid)), ("wrong", GridFlow(-flow.flow, flow.valid))):
            warped, _ = warp(pooled(prev), f, "bilinear")
            error[name] = float((warped[0, 4:-4, 4:-4] - target).abs().mean())
        assert error["right"] < 0.5 * error["zero"] and error["wrong"] > error["zero"], error


def test_whole_cell_shift_is_exact_and_borders_are_distorted():
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    flow = torch.zeros(5, 7, 2)
    flow[..., 0], flow[..., 1] = 2, -1  # current[i, j] = ref[i - 1, j + 2]
    ok = torch.ones(5, 7, dtype=torch.bool)
    for sampling in ("nearest", "bilinear"):
        out, distorted = warp(x, GridFlow(flow, ok), sampling)
        torch.testing.assert_close(out[:, 1:, :5], x[:, :4, 2:])
        assert distorted[0].all() and distorted[:, 5:].all()  # sources above the top or past the right edge
        assert not distorted[1:, :5].any()
        torch.testing.assert_close(out[:, 0, :5], x[:, 0, 2:])  # clamped to the border row


def test_cells_without_vectors_stay_in_place_and_are_distorted():
    x = torch.rand(3, 4, 6)
    flow = torch.full((4, 6, 2), 1.0)
    ok = torch.ones(4, 6, dtype=torch.bool)
    ok[1, 2] = False
    flow[1, 2] = 0  # motion_to_grid gives invalid cells zero flow
    out, distorted = warp(x[None], GridFlow(flow, ok))
    torch.testing.assert_close(out[0, :, 1, 2], x[:, 1, 2])
    assert distorted[1, 2] and distorted.sum() == 1 + 4 + 5  # plus the right column and bottom row


def test_motion_to_grid_nearest_and_bilinear():
    vectors = np.zeros((2, 3, 2), np.float32)
    vectors[..., 0] = [[8, 16, 24], [8, 16, 24]]
    valid = np.ones((2, 3), bool)
    valid[1, 2] = False
    near = motion_to_grid(vectors, valid, 8, (4, 6), 4)
    assert near.flow.shape == (4, 6, 2)
    # each 8-pixel block covers 2x2 cells of stride 4; 8 pixels are 2 cells
    np.testing.assert_array_equal(near.flow[0, :, 0].numpy(), [2, 2, 4, 4, 6, 6])
    assert not near.valid[2:, 4:].any() and near.valid.sum() == 20
    bil = motion_to_grid(vectors, valid, 8, (4, 6), 4, "bilinear")
    # between block centres the vector is interpolated; next to the invalid block only valid blocks count
    # (cell 1's centre, pixel 5.5, lies 0.1875 of the way from block 0's centre to block 1's: 9.5 px)
    assert bil.flow[0, 1, 0] == pytest.approx(9.5 / 4) and bil.flow[0, 2, 0] == pytest.approx(13.5 / 4)
    assert not bil.valid[3, 5]  # surrounded by the invalid block only
    assert bil.valid[2, 4] and 16 / 4 < bil.flow[2, 4, 0] < 24 / 4  # the invalid block does not pull it to 0


def test_composed_motion_keeps_what_chained_nearest_warps_drop():
    x = torch.zeros(1, 3, 12)
    x[0, :, 6] = 1
    step = GridFlow(torch.tensor([0.4, 0.0]).expand(3, 12, 2).contiguous(), torch.ones(3, 12, dtype=torch.bool))
    chained, acc = x, zero_flow((3, 12))
    for _ in range(5):
        chained, _ = warp(chained, step, "nearest")
        acc = compose(step, acc)
    torch.testing.assert_close(acc.flow[1, 3], torch.tensor([2.0, 0.0]))
    composed, _ = warp(x, acc, "nearest")
    assert chained[0, 1].argmax() == 6  # every 0.4-cell step rounded away: no motion at all
    assert composed[0, 1].argmax() == 4  # 5 x 0.4 = 2 cells: current[j] = ref[j + 2]


@pytest.mark.parametrize("grid, stride", [((16, 24), (4, 4)), ((16, 12), (4, 8)), ((8, 12), 8)])
def test_dense_to_grid_of_a_constant_flow_is_that_flow_over_the_stride(grid, stride):
    pixels = np.empty((64, 96, 2), np.float32)
    pixels[...] = (3.0, -2.0)
    motion = dense_to_grid(pixels, grid, stride)
    sy, sx = (stride, stride) if np.isscalar(stride) else stride
    assert motion.flow.dtype == torch.float32 and motion.flow.shape == (*grid, 2)
    assert torch.equal(motion.flow, torch.tensor([3.0 / sx, -2.0 / sy]).expand(*grid, 2))
    assert motion.valid.dtype == torch.bool and motion.valid.shape == grid and motion.valid.all()


def test_dense_to_grid_averages_the_pixels_of_each_cell():
    pixels = np.random.default_rng(0).normal(0, 5, (12, 20, 2)).astype(np.float32)
    motion = dense_to_grid(pixels, (3, 5), (4, 4))
    means = pixels.reshape(3, 4, 5, 4, 2).mean(axis=(1, 3)) / 4
    np.testing.assert_allclose(motion.flow.numpy(), means, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sampling"):
        warp(torch.zeros(1, 2, 2), zero_flow((2, 2)), "cubic")
    with pytest.raises(ValueError, match="does not match"):
        warp(torch.zeros(1, 2, 3), zero_flow((2, 2)))
    with pytest.raises(ValueError, match="mode"):
        motion_to_grid(np.zeros((1, 1, 2), np.float32), np.ones((1, 1), bool), 8, (2, 2), 4, "area")
