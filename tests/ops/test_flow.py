"""Block vectors from optical flow (:meth:`OpticalFlow.blocks`): DIS on reduced frames against the block means of its
full-size flow, on a real frame pair where the shared data is present and on a textured synthetic pair anywhere."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from taplab.ops.flow import METHODS, OpticalFlow, flow_to_blocks

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "vid_h264.mp4"


def textured_pair(height: int = 180, width: int = 320, shift: tuple[int, int] = (3, -2)):
    """A smooth random texture and the same shifted by ``shift`` = (dx, dy) pixels: current[y, x] = previous[y + dy,
    x + dx], so the backward flow is ``shift`` away from the borders."""
    rng = np.random.default_rng(5)
    noise = cv2.resize(rng.random((height // 8 + 4, width // 8 + 4)).astype(np.float32), (width + 32, height + 32),
                       interpolation=cv2.INTER_CUBIC)
    previous = (255 * (noise - noise.min()) / np.ptp(noise)).astype(np.uint8)
    dx, dy = shift
    current = previous[16 + dy:16 + dy + height, 16 + dx:16 + dx + width]
    return np.ascontiguousarray(current), np.ascontiguousarray(previous[16:16 + height, 16:16 + width])


@pytest.mark.parametrize("method", METHODS)
def test_block_vectors_agree_with_the_block_means_of_the_full_flow(method):
    current, previous = textured_pair()
    flow = OpticalFlow(method)
    full = flow_to_blocks(flow(current, previous), 4)
    blocks = flow.blocks(current, previous, 4)
    assert blocks.shape == full.shape == (45, 80, 2) and blocks.dtype == np.float32
    inner = (slice(4, -4), slice(4, -4))
    # both find the shift away from the borders, and agree with each other
    assert np.abs(blocks[inner] - np.array([3, -2], np.float32)).mean() < 0.3
    assert np.linalg.norm(blocks - full, axis=2).mean() < 0.25
    if method == "farneback":  # nothing to reduce: the same computation
        assert np.array_equal(blocks, full)


def test_reduction_follows_the_finest_scale_the_block_and_the_size():
    ultrafast, medium = OpticalFlow("dis-ultrafast"), OpticalFlow("dis-medium")
    assert ultrafast._reduction((720, 1280), 4) == 4 and medium._reduction((720, 1280), 4) == 2
    assert ultrafast._reduction((720, 1280), 2) == 2 and ultrafast._reduction((722, 1280), 4) == 2
    assert ultrafast._reduction((721, 1280), 4) == 1 and OpticalFlow("farneback")._reduction((720, 1280), 4) == 1
    current, previous = textured_pair(180, 320)
    for flow, s, finest in ((ultrafast, 4, 0), (medium, 2, 0), (OpticalFlow("dis-fast"), 4, 0)):
        flow.blocks(current, previous, 4)
        assert set(flow._coarse) == {s} and flow._coarse[s].getFinestScale() == finest  # the same absolute scale
    current, previous = textured_pair(181, 320)  # an odd height: the full-size flow, exactly
    flow = OpticalFlow("dis-ultrafast")
    assert np.array_equal(flow.blocks(current, previous, 4), flow_to_blocks(flow(current, previous), 4))


def test_on_real_frames_the_reduced_flow_is_within_a_tenth_of_a_pixel():
    if not REAL.exists():
        pytest.skip(f"the shared real data is not here ({REAL})")
    import av

    with av.open(str(REAL)) as container:
        lumas = [f.to_ndarray(format="gray") for _, f in zip(range(12), container.decode(video=0))]
    flow = OpticalFlow("dis-ultrafast")
    gaps = [np.linalg.norm(flow.blocks(a, b, 4) - flow_to_blocks(flow(a, b), 4), axis=2).mean()
            for a, b in zip(lumas[1:], lumas[:-1])]
    assert max(gaps) < 0.1 and np.mean([np.abs(flow.blocks(a, b, 4)).mean() for a, b in zip(lumas[1:], lumas)]) > 0.1
