"""The scheduler's parts one by one: frame kinds, the configuration's rules, the anchor state, the latency
policy, the background key frames and the motion sources."""

import json
import math
import pickle
import threading
import time

import numpy as np
import pytest
import torch

from taplab.errors import ConfigError
from taplab.ops.warp import GridFlow, motion_to_grid, zero_flow
from taplab.runtime import KINDS, FrameKind, FrameResult, Kind, Module, RuntimeConfig
from taplab.runtime.anchors import Anchors
from taplab.runtime.latency import KeyFrameWorker, LatencyPolicy
from taplab.runtime.motion import SOURCES, CodecVectors, GroundTruthFlow, OpticalFlowSource, motion_source

# ---------------------------------------------------------------- kinds


@pytest.mark.parametrize("kind, modules, text", [
    (Kind.WARP, (), "warp"), (Kind.WARP, (Module.FUSION,), "fused"), (Kind.WARP, (Module.RGC,), "warp+RGC"),
    (Kind.WARP, (Module.FUSION, Module.RGC), "fused+RGC"), (Kind.KEY_I, (), "key-I"), (Kind.HOLD, (), "hold"),
    (Kind.SKIP, (), "skip"), (Kind.INTERP, (), "interp"),
])
def test_a_frame_kind_is_its_stable_string(kind, modules, text):
    k = FrameKind(kind, modules)
    assert k == text and str(k) == text and json.dumps(k) == f'"{text}"' and text in KINDS
    parsed = FrameKind(text)
    assert (parsed.kind, parsed.modules) == (kind, frozenset(modules))
    copy = pickle.loads(pickle.dumps(k))
    assert (copy, copy.kind, copy.modules) == (text, kind, frozenset(modules))


def test_frame_kinds_refuse_what_cannot_happen():
    with pytest.raises(ValueError, match="unknown frame kind"):
        FrameKind("warp+fusion")
    with pytest.raises(ValueError, match="only warped frames are corrected"):
        FrameKind(Kind.KEY_I, {Module.RGC})
    kinds = ("key-I", "key", "key-RGFS", "key-interval", "hold", "warp", "skip")
    assert [FrameKind(k).is_key for k in kinds] == [True] * 4 + [False] * 3


def test_a_result_takes_a_kinds_string_form_and_records_it():
    r = FrameResult(3, "P", "fused+RGC", np.zeros((2, 2), np.uint8), latency=0.0125, timings={"warp": 0.002})
    assert r.kind.modules == {Module.FUSION, Module.RGC} and not r.is_key
    record = r.record()
    assert record["kind"] == "fused+RGC" and record["latency_ms"] == 12.5 and record["ms"] == {"warp": 2.0}
    assert json.loads(json.dumps(record)) == record

# ---------------------------------------------------------------- configuration


def test_rgfs_is_rate_mode_unless_a_threshold_alone_is_given():
    default = RuntimeConfig()
    assert default.rgfs_by_rate and default.rgfs_share == 0.1
    assert RuntimeConfig(rgfs_rate=0.3).rgfs_by_rate and RuntimeConfig(rgfs_rate=0.3).rgfs_share == 0.3
    assert RuntimeConfig(rgfs_mode="rate").rgfs_share == 0.1
    assert RuntimeConfig().replace(rgfs_rate=0.2).rgfs_by_rate  # also over a whole config, as Segmenter merges
    threshold = RuntimeConfig(rgfs_threshold=4.0)
    assert not threshold.rgfs_by_rate and threshold.rgfs_level == 4.0
    assert not RuntimeConfig(rgfs_mode="absolute").rgfs_by_rate
    assert RuntimeConfig(rgfs_mode="absolute").rgfs_level == pytest.approx(5.72, abs=0.01)  # the paper's
    # a config saved before rate mode was the default holds both: the rate given still means rate mode
    assert RuntimeConfig(rgfs_threshold=5.72, rgfs_rate=0.2).rgfs_by_rate
    with pytest.raises(ConfigError, match="contradicts rgfs_mode='absolute'"):
        RuntimeConfig(rgfs_mode="absolute", rgfs_rate=0.3)
    with pytest.raises(ConfigError, match="contradicts rgfs_mode='rate'"):
        RuntimeConfig(rgfs_mode="rate", rgfs_threshold=3.0)


@pytest.mark.parametrize("name, text, value", [
    ("rgc", "off", False), ("fusion", "auto", None), ("fusion", "true", True), ("rgc_alpha", "0.5", 0.5),
    ("rgc_size", "64", 64), ("rgc_size", "none", None), ("latency_budget", "0.1", 0.1), ("rgfs_mode", "rate", "rate"),
    ("correction", "none", None), ("labels", "exact", "exact"),
])
def test_text_values_are_read_with_their_fields_type(name, text, value):
    assert RuntimeConfig.parse(name, text) == value


@pytest.mark.parametrize("name, text, message", [
    ("rgc", "maybe", "rgc is true or false"), ("rgc_size", "1.5", "rgc_size must be an integer"),
    ("rgc_alpha", "high", "rgc_alpha must be a number"), ("thr", "3", "unknown runtime option 'thr'"),
])
def test_bad_text_values_say_what_is_expected(name, text, message):
    with pytest.raises(ConfigError, match=message):
        RuntimeConfig.parse(name, text)


def test_every_field_describes_itself_for_the_command_line():
    for name in RuntimeConfig.field_names():
        info = RuntimeConfig.describe(name)
        assert info.help and info.value_type in (bool, int, float, str) and info.flag == "--" + name.replace("_", "-")
        default = getattr(RuntimeConfig(), name)
        assert info.default == default and (default is None) <= info.optional
        if info.choices:
            assert default in info.choices

# ---------------------------------------------------------------- anchors


def shift(grid, dx):
    return GridFlow(torch.tensor([dx, 0.0]).expand(*grid, 2).contiguous(), torch.ones(grid, dtype=torch.bool))


def test_anchor_state_accumulates_motion_and_b_frames_write_nothing():
    class Fake:  # a stand-in for taplab.codec.Frame with the fields Anchors.end_frame reads (this is a unit test)
        def __init__(self, index, pict_type):
            self.index, self.pict_type, self.image = index, pict_type, np.full((4, 4, 3), index, np.uint8)

    grid, key = (3, 4), torch.randn(2, 3, 4)
    a = Anchors(grid)
    assert not a.has_source
    a.set_key(key, 0, anchor=True)
    a.end_frame(Fake(0, "I"), keep_image=True)
    assert a.has_source and a.key_index == 0 and a.anchor_index == 0 and a.anchor_image[0, 0, 0] == 0
    a.extend(shift(grid, 0.5))
    a.extend(shift(grid, 0.25))
    torch.testing.assert_close(a.motion_to_key.flow[1, 1], torch.tensor([0.75, 0.0]))
    a.features = torch.zeros(2, 3, 4)
    a.end_frame(Fake(5, "B"), keep_image=True)  # B-frames are no anchors
    assert a.anchor_index == 0 and a.anchor_features is key and a.anchor_image[0, 0, 0] == 0
    a.end_frame(Fake(6, "P"), keep_image=False)
    assert a.anchor_index == 6 and a.anchor_features is a.features and a.anchor_image[0, 0, 0] == 0
    a.hold(None)
    assert a.key_features is None and torch.equal(a.motion_to_key.flow, zero_flow(grid).flow)


def test_reference_labels_are_the_key_frames_computed_once():
    calls = []

    def logits(f):
        calls.append(1)
        return f

    a = Anchors((2, 2))
    key = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    a.set_key(key, 0, anchor=True)
    assert a.reference_labels(logits, accumulate=True).tolist() == [[0, 1], [1, 0]]
    a.reference_labels(logits, accumulate=True)
    assert len(calls) == 1
    a.adopt(-key, 7)  # a background key frame's features: the cache goes
    assert a.reference_labels(logits, accumulate=True).tolist() == [[1, 0], [0, 1]] and a.key_index == 7

# ---------------------------------------------------------------- the latency policy


def test_costs_are_running_means_and_rgc_starts_from_the_cnns_share():
    p = LatencyPolicy(0.1, region_share=0.25)
    assert p.cost("cnn_region") == 0.0  # nothing known: run it once and measure
    p.cnn_seconds = 0.2
    assert p.cost("cnn_region") == pytest.approx(0.05)
    p.measure("fusion", 0.010)
    p.measure("fusion", 0.020)
    assert p.cost("fusion") == pytest.approx(0.7 * 0.010 + 0.3 * 0.020)


def test_what_fits_before_a_deadline():
    # deadlines an hour away or already past: no pause of a loaded machine between two lines moves a decision
    p = LatencyPolicy(0.1)
    assert p.deadline(None) is None and p.deadline(5.0) == pytest.approx(5.1)
    now = time.perf_counter()
    p.measure("fusion", 0.05)
    assert p.fits("fusion", now + 3600, cnn_busy=False)
    assert not p.fits("fusion", now + 3600, cnn_busy=True)  # the CNN takes the cores
    assert not p.fits("fusion", now + 0.01, cnn_busy=False)  # 50 ms of fusion cannot fit in 10 ms
    assert p.fits("fusion", None, cnn_busy=True)  # no budget: everything runs
    assert p.late(now - 1, newer=True) and not p.late(now - 1, newer=False) and not p.late(None, newer=True)
    assert not p.late(now + 3600, newer=True)
    # the first CNN's time is unknown: wait for it until the deadline less the labels' time, measured from the
    # moment of the call, which lies between the two readings of the clock around it
    p.measure("labels", 0.02)
    before = time.perf_counter()
    deadline = before + 3600
    wait = p.key_wait(deadline)
    after = time.perf_counter()
    assert wait is not None and deadline - 0.02 - after <= wait <= deadline - 0.02 - before
    assert p.key_wait(now - 1) == 0.0  # past its deadline: the CNN is not waited for, but never a negative wait
    p.cnn_seconds = 2.0
    # known not to fit: the key frame is held at once (a slow machine only makes a 2 s CNN fit less in 1 s)
    soon = time.perf_counter() + 1.0
    assert p.key_wait(soon) is None
    assert p.key_wait(math.inf) == math.inf  # no deadline in sight: it fits, and is waited for


def test_the_key_frame_worker_carries_a_finished_cnn_to_the_current_key_frame():
    """With a stand-in CNN whose release the test controls (the worker is a unit here: no model, no video)."""
    release = threading.Event()

    def features(image):
        assert release.wait(60)  # (a guard: the test releases it)
        return torch.from_numpy(image.astype(np.float32))

    carried = []

    def carry(f, motion):
        carried.append(motion)
        return f + 100

    worker = KeyFrameWorker(features, carry)
    grid = (1, 3)
    first = worker.submit(0, np.zeros((1, 1, 3)), zero_flow(grid))
    assert worker.busy and worker.finished() is None
    worker.submit(12, np.ones((1, 1, 3)), shift(grid, 1.0))  # a newer key frame while the first runs
    assert first.carry is not None  # the first will be carried to the newer one
    release.set()
    for job in list(worker.jobs):
        job.future.result(60)  # both finished (60 s: a guard against a hang)
    features_, index, cnn_time = worker.finished()
    assert index == 12 and features_.sum() == 3 and isinstance(cnn_time, float)  # the newest; the older one carried first
    assert len(carried) == 1 and torch.equal(carried[0].flow, shift(grid, 1.0).flow) and not worker.busy
    worker.close()


def test_waiting_for_a_key_frame_in_time_clears_the_queue():
    worker = KeyFrameWorker(lambda image: torch.zeros(1), lambda f, m: f)
    job = worker.submit(0, np.zeros(1), zero_flow((1, 1)))
    features, seconds = worker.wait(job, 60.0)  # (a guard: it returns when the CNN does)
    assert torch.equal(features, torch.zeros(1)) and not worker.busy
    worker.close()

# ---------------------------------------------------------------- motion sources


def test_motion_sources_are_a_registry_of_the_configs_choices():
    assert set(SOURCES) == set(RuntimeConfig.describe("motion_source").choices)
    grid, stride = (8, 16), (4, 4)
    assert isinstance(motion_source(RuntimeConfig(), grid, stride), CodecVectors)
    assert isinstance(motion_source(RuntimeConfig(motion_source="dis-fast"), grid, stride), OpticalFlowSource)
    with pytest.raises(ConfigError, match="needs the clip's flows"):
        motion_source(RuntimeConfig(motion_source="truth"), grid, stride)
    truth = motion_source(RuntimeConfig(motion_source="truth"), grid, stride, truth_flow=[])
    assert isinstance(truth, GroundTruthFlow) and truth.stage == "flow" and not truth.blocks


def test_codec_vectors_on_the_grid_are_motion_to_grid(translation_clip):
    from taplab.codec import open_video

    with open_video(translation_clip) as video:
        frames = [f for _, f in zip(range(3), video)]
    source = CodecVectors("codec", RuntimeConfig(), (32, 64), (4, 4))
    assert not source.available(frames[0]) and source.available(frames[1])
    m = frames[1].motion
    flow = source.flow(frames[1], Anchors((32, 64)))
    expected = motion_to_grid(m.vectors, m.valid, m.block, (32, 64), (4, 4))
    assert torch.equal(flow.flow, expected.flow) and torch.equal(flow.valid, expected.valid)
    assert source.origin(frames[1]) == "codec"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_motion_source_recovers_a_known_translation(name, translation_clip):
    """The clip pans by (DX, DY) pixels per frame, current[y, x] = previous[y + DY, x + DX]: every source must
    give that motion, in cells of the stride, on the frame's interior."""
    from taplab.codec import open_video
    from tests.conftest import DX, DY

    with open_video(translation_clip) as video:
        first, second = [f for _, f in zip(range(2), video)]
    grid, stride = (32, 64), (4, 4)
    truth = [None, np.broadcast_to(np.array([DX, DY], np.float32), (128, 256, 2))]
    source = motion_source(RuntimeConfig(motion_source=name), grid, stride, truth_flow=truth)
    anchors = Anchors(grid)
    anchors.anchor_index, anchors.anchor_image = first.index, first.image
    assert source.available(second) and source.stage in ("warp", "flow")
    motion = source.flow(second, anchors)
    interior = motion.flow[4:-4, 4:-4][motion.valid[4:-4, 4:-4]]
    assert len(interior) > 0.9 * 24 * 56
    median = interior.median(0).values
    torch.testing.assert_close(median, torch.tensor([DX / 4, DY / 4]), atol=0.15, rtol=0)

# ---------------------------------------------------------------- correction stages


def test_fusion_with_an_identity_correction_network_keeps_the_warped_logits(translation_clip):
    """An untrained CoNet starts as the identity (F_updated = F_warped), so the fused logits equal the warped
    ones whatever the map; the map is DMNet's mix of M_coarse and the edge map, in [0, 1]."""
    from taplab.codec import open_video
    from taplab.nets.conet import CoNet, Correction
    from taplab.ops.fusion import coarse_distortion, residual_map
    from taplab.runtime.corrections import Fusion

    with open_video(translation_clip) as video:
        frame = [f for _, f in zip(range(2), video)][1]
    grid = (32, 64)
    stage = Fusion(Correction(CoNet(4), ("a", "b", "c", "d"), 4, "<identity>"), RuntimeConfig(), grid)
    warped = torch.randn(4, *grid)
    reference = torch.randint(0, 4, grid)
    distorted = torch.zeros(grid, dtype=torch.bool)
    coarse = stage.coarse(frame, warped, reference, distorted)
    expected = coarse_distortion(warped, reference, distorted, residual_map(frame.residual, grid, 30.0))
    assert torch.equal(coarse, expected)
    fused, distortion = stage(frame, warped, warped, coarse)
    torch.testing.assert_close(fused, warped)
    assert distortion.shape == grid and 0 <= distortion.min() and distortion.max() <= 1
    assert not Fusion(None, RuntimeConfig(), grid).enabled and stage.enabled


def test_region_correction_picks_the_region_of_most_residual_and_blends_its_cnn_output():
    """With a stand-in CNN (constant features: the stage is a unit here) and a frame whose residual is large in
    one corner only."""
    from taplab.runtime.corrections import RegionCorrection

    class Frame:  # the two fields the stage reads; a real Frame needs a decoder
        residual = np.zeros((128, 256), np.uint8)
        image = np.zeros((128, 256, 3), np.uint8)

    Frame.residual[80:128, 200:256] = 200
    stage = RegionCorrection(RuntimeConfig(rgc_alpha=0.5), (128, 256), 4, lambda crop: torch.ones(2, *[n // 4 for n in crop.shape[:2]]))
    region, count = stage.select(Frame())
    assert count == 48 * 56 and region.y + region.height == 128 and region.x + region.width == 256
    features = torch.zeros(2, 32, 64)
    stage(features, Frame(), region)
    ys, xs = region.slices()
    assert features[:, ys.start // 4:ys.stop // 4, xs.start // 4:xs.stop // 4].eq(0.5).all()
    assert features.sum() == 0.5 * 2 * (region.height // 4) * (region.width // 4)
