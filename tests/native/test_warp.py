"""The C warp kernel agrees with the torch reference (taplab/ops/warp.py) on random motion fields."""

import pytest
import torch

from taplab.native import kernel, status
from taplab.ops.warp import GridFlow, compose, motion_to_grid, warp, warp_reference


@pytest.fixture(scope="module")
def built():
    if kernel("warp") is None:
        pytest.fail(f"the warp kernel is not built here: {status('warp').reason}")


def random_motion(h: int, w: int, seed: int, reach: float = 3.0) -> GridFlow:
    """Sub-cell flows, some reaching out of the grid, and a tenth of the cells without a vector."""
    g = torch.Generator().manual_seed(seed)
    flow = (torch.rand(h, w, 2, generator=g) * 2 - 1) * reach
    flow[0, :, 1] = -reach - 1.3  # the top row points above the grid
    return GridFlow(flow, torch.rand(h, w, generator=g) > 0.1)


@pytest.mark.parametrize("channels, h, w", [(19, 45, 80), (3, 17, 33), (1, 1, 1), (64, 8, 5), (2, 1, 9)])
@pytest.mark.parametrize("sampling", ["nearest", "bilinear"])
def test_kernel_agrees_with_the_reference(built, channels, h, w, sampling):
    features = torch.randn(channels, h, w, generator=torch.Generator().manual_seed(h * w))
    motion = random_motion(h, w, seed=channels + h)
    out, distorted = warp(features, motion, sampling)
    ref, ref_distorted = warp_reference(features, motion, sampling)
    assert torch.equal(distorted, ref_distorted) and distorted[0].all()  # the top row's sources are outside
    if sampling == "nearest":
        assert torch.equal(out, ref)
    else:  # the reference's round trip through grid_sample's [-1, 1] coordinates rounds differently
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_composition_through_the_kernel_equals_the_reference(built, monkeypatch):
    step, so_far = random_motion(30, 40, 1, reach=2), random_motion(30, 40, 2, reach=5)
    native = compose(step, so_far)
    monkeypatch.setattr("taplab.ops.warp.kernel", lambda name: None)
    ref = compose(step, so_far)
    torch.testing.assert_close(native.flow, ref.flow, atol=1e-5, rtol=1e-5)
    assert torch.equal(native.valid, ref.valid)


def test_whole_cell_vectors_move_features_exactly(built):
    import numpy as np

    features = torch.arange(2 * 6 * 8, dtype=torch.float32).reshape(2, 6, 8)
    vectors = np.zeros((3, 4, 2), np.float32)
    vectors[..., 0] = 8  # 8 px right at stride 4: two cells
    motion = motion_to_grid(vectors, np.ones((3, 4), bool), 16, (6, 8), 4)
    for sampling in ("nearest", "bilinear"):
        out, distorted = warp(features, motion, sampling)
        assert torch.equal(out[:, :, :6], features[:, :, 2:])
        assert distorted[:, 6:].all() and not distorted[:, :6].any()


def test_kernel_rejects_buffers_too_small_for_the_sizes(built):
    import numpy as np

    args = [np.zeros((4, 4, 2), np.float32), np.ones((4, 4), bool), True, np.zeros((19, 4, 4), np.float32),
            np.zeros((4, 4), bool)]
    with pytest.raises(ValueError, match="features: buffer holds 40 bytes"):
        kernel("warp").warp(np.zeros(10, np.float32), 19, 4, 4, *args)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        kernel("warp").warp(np.zeros(10, np.float32), 0, 4, 4, *args)


def test_taplab_info_reports_every_kernel_and_the_correction_network(built, capsys):
    from taplab.cli import main

    main(["info"])
    out = capsys.readouterr().out
    for name in ("mc kernels", "labels kernel", "warp kernel"):
        assert f"{name}".ljust(14) + "compiled C kernel" in out
    assert "bl2-synth.conet.pt (fusion on by default)" in out
