"""taplab.data.synth: determinism, label space, exact flow, texture, the written layout, config checks."""

from __future__ import annotations

import json
from dataclasses import replace

import av
import cv2
import numpy as np
import pytest

from taplab.data.labels import NUM_CLASSES, TRAIN_ID
from taplab.data.synth import SynthConfig, SynthFrame, generate, write_clip
from taplab.errors import ConfigError, TapLabError

SMALL = SynthConfig(height=128, width=256, frames=6, seed=1)
#: no sensor noise and constant exposure: frame differences are then motion only
CLEAN = replace(SMALL, height=192, width=384, frames=10, seed=4, noise_std=0.0, lighting_change=0.0)


def _clip(config: SynthConfig) -> list[SynthFrame]:
    return list(generate(config))


@pytest.fixture(scope="module")
def clean() -> list[SynthFrame]:
    return _clip(CLEAN)


@pytest.fixture(scope="module")
def medium() -> list[SynthFrame]:
    """A clip near the default size and length, where every kind of object shows up."""
    return _clip(SynthConfig(height=256, width=512, frames=30, seed=0))


def _warp(prev: SynthFrame, cur: SynthFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp frame t-1 with flow[t] (taplab's backward convention); returns (image, labels, in-frame mask)."""
    h, w = cur.labels.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + cur.flow[..., 0], gy + cur.flow[..., 1]
    image = cv2.remap(prev.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    labels = cv2.remap(prev.labels, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return image, labels, inside


def test_frames_have_the_documented_shapes_and_types():
    frames = _clip(SMALL)
    assert [f.index for f in frames] == list(range(SMALL.frames))
    for f in frames:
        assert f.image.shape == (128, 256, 3) and f.image.dtype == np.uint8
        assert f.labels.shape == (128, 256) and f.labels.dtype == np.uint8
        assert f.flow.shape == (128, 256, 2) and f.flow.dtype == np.float32
        assert f.labels.max() < NUM_CLASSES  # only train ids, never the ignore label
    assert not frames[0].flow.any()
    assert np.abs(frames[1].flow).mean() > 0.2  # the camera moves, so the flow does too


def test_same_seed_same_clip_whatever_the_global_rng():
    np.random.seed(0)
    a = _clip(SMALL)
    np.random.seed(123)
    np.random.random(17)
    b = _clip(SMALL)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.image, fb.image)
        assert np.array_equal(fa.labels, fb.labels)
        assert np.array_equal(fa.flow, fb.flow)


def test_other_seed_other_clip():
    a, b = _clip(SMALL), _clip(replace(SMALL, seed=2))
    assert np.abs(a[3].image.astype(int) - b[3].image).mean() > 10
    assert (a[3].labels != b[3].labels).mean() > 0.05


def test_required_classes_appear(medium):
    seen = set(np.unique(np.stack([f.labels for f in medium])).tolist())
    required = ("road", "sidewalk", "building", "vegetation", "sky", "pole", "traffic sign", "car", "person",
                "rider", "bicycle", "terrain")
    missing = [name for name in required if TRAIN_ID[name] not in seen]
    assert not missing, f"classes never rendered: {missing}"
    assert len(seen) >= 14


def test_flow_warps_previous_frame_onto_current(clean):
    for t in range(1, CLEAN.frames):
        prev, cur = clean[t - 1], clean[t]
        image, labels, inside = _warp(prev, cur)
        agree = labels == cur.labels
        assert agree[inside].mean() > 0.95, f"frame {t}: labels warped with the flow disagree"
        # compare images away from occlusion edges: where the labels agree in a 5x5 neighbourhood
        valid = cv2.erode((agree & inside).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert valid.mean() > 0.7
        warped_error = np.abs(image.astype(np.float32) - cur.image).mean(2)[valid].mean()
        zero_error = np.abs(prev.image.astype(np.float32) - cur.image).mean(2)[valid].mean()
        assert warped_error < 5.0, f"frame {t}: mean abs error {warped_error:.2f} after warping"
        assert warped_error < 0.35 * zero_error, f"frame {t}: warping ({warped_error:.2f}) vs none ({zero_error:.2f})"


def test_flow_follows_moving_and_articulated_objects(clean):
    movers = [TRAIN_ID[n] for n in ("car", "person", "rider", "bicycle")]
    agree = total = 0
    for t in range(1, CLEAN.frames):
        _, labels, inside = _warp(clean[t - 1], clean[t])
        on = np.isin(clean[t].labels, movers) & inside
        agree += int((labels[on] == clean[t].labels[on]).sum())
        total += int(on.sum())
    assert total > 2000, "too few object pixels for the test to mean anything"
    assert agree / total > 0.85


def test_textures_are_not_flat(clean):
    frame = clean[5]
    grey = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    inner = cv2.erode(np.ones_like(frame.labels), np.ones((3, 3), np.uint8))  # ignore the frame border
    for name in ("road", "sidewalk", "building", "vegetation", "sky"):
        region = (frame.labels == TRAIN_ID[name]) & (inner > 0)
        region = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # no edges
        assert region.sum() > 300, name
        assert grey[region].std() > 4.0, f"{name} looks flat (std {grey[region].std():.1f})"


def test_sensor_noise_and_lighting_change_the_image():
    quiet = _clip(replace(SMALL, noise_std=0.0, lighting_change=0.0))
    noisy = _clip(replace(SMALL, noise_std=4.0, lighting_change=0.0))
    diff = noisy[2].image.astype(np.float32) - quiet[2].image
    assert 2.5 < diff.std() < 6.0  # noise_std is in 8-bit levels
    lit = _clip(replace(SMALL, noise_std=0.0, lighting_change=0.3))
    first, last = (f.image.astype(np.float32).mean() for f in (lit[0], lit[-1]))
    base_first, base_last = (f.image.astype(np.float32).mean() for f in (quiet[0], quiet[-1]))
    assert abs((last / first) / (base_last / base_first) - 1) > 0.2
    assert np.array_equal(lit[0].labels, quiet[0].labels)


def test_write_clip_writes_the_layout_and_a_decodable_video(tmp_path):
    config = SynthConfig(height=64, width=128, frames=10, seed=5)
    seen: list[int] = []
    video = write_clip(tmp_path, config, gop=4, name="clip", images=True, progress=seen.append)
    assert video == tmp_path / "video" / "clip.mp4" and video.is_file()
    assert seen == list(range(10))

    frames = _clip(config)
    for f in frames:
        stem = f"clip_{f.index:06d}"
        label_png = cv2.imread(str(tmp_path / "gtFine" / "clip" / f"{stem}_gtFine_labelTrainIds.png"),
                               cv2.IMREAD_UNCHANGED)
        assert label_png.dtype == np.uint8 and np.array_equal(label_png, f.labels)
        image_png = cv2.imread(str(tmp_path / "leftImg8bit" / "clip" / f"{stem}_leftImg8bit.png"))
        assert np.array_equal(cv2.cvtColor(image_png, cv2.COLOR_BGR2RGB), f.image)
    with np.load(tmp_path / "flow" / "clip.npz") as npz:
        flow = npz["flow"]
    assert flow.shape == (10, 64, 128, 2) and flow.dtype == np.float16
    assert np.abs(flow.astype(np.float32) - np.stack([f.flow for f in frames])).max() < 0.05

    meta = json.loads((tmp_path / "meta.json").read_text())
    assert (meta["seed"], meta["size"], meta["frames"], meta["gop"], meta["codec"]) == (5, [64, 128], 10, 4, "mpeg4")
    assert meta["classes"][0] == "road" and len(meta["classes"]) == NUM_CLASSES
    assert meta["config"]["ego_speed_mps"] == config.ego_speed_mps

    with av.open(str(video)) as container:
        types = [av.video.frame.PictureType(f.pict_type).name for f in container.decode(video=0)]
    assert len(types) == 10
    assert [i for i, t in enumerate(types) if t == "I"] == [0, 4, 8]
    assert set(types) == {"I", "P"}


def test_write_clip_leaves_out_images_by_default(tmp_path):
    write_clip(tmp_path, SynthConfig(height=64, width=64, frames=2), name="a")
    assert not (tmp_path / "leftImg8bit").exists()
    assert len(list((tmp_path / "gtFine" / "a").glob("*.png"))) == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"height": 63},
        {"width": 130 - 1},
        {"height": 32},
        {"width": 62},
        {"frames": 0},
        {"fps": 0},
        {"noise_std": -1},
        {"cloudiness": 1.5},
        {"hfov_deg": 0},
        {"horizon": 1.0},
        {"cars": -1},
        {"lighting_change": 1.0},
        {"road_half_width_m": 1.0},
        {"texture_px_per_m": 1000.0},
        {"frames": 3.0},
        {"seed": 1.5},
        {"cars": True},
        {"camera_height_m": 3.0},
    ],
)
def test_bad_config_raises_config_error(bad):
    with pytest.raises(ConfigError) as info:
        SynthConfig(**bad)
    assert next(iter(bad)) in str(info.value)
    assert isinstance(info.value, TapLabError)


def test_write_clip_rejects_a_bad_name(tmp_path):
    with pytest.raises(ConfigError):
        write_clip(tmp_path, SynthConfig(height=64, width=64, frames=1), name="../x")


def test_bad_encoder_options_leave_no_folders(tmp_path):
    from taplab.errors import EncodeError

    config = SynthConfig(height=64, width=128, frames=2, seed=1)
    with pytest.raises(EncodeError, match="gop must be >= 1"):
        write_clip(tmp_path / "clip", config, gop=-1)
    with pytest.raises(EncodeError, match="quality"):
        write_clip(tmp_path / "clip", config, quality=999)
    assert not (tmp_path / "clip").exists()  # once: flow/, gtFine/ and video/ were left behind
