"""Procedural street-scene video with exact labels and exact optical flow.

No labelled video can be downloaded where taplab is developed, yet every accuracy
measurement (training a segmentation CNN, judging how well warping propagates
labels) needs frames with exact ground truth. This module renders them: a camera
drives down a street (perspective ground plane, facades on both sides, sky),
pans, and passes poles, signs, trees, cars, trucks, buses, walking people and
cyclists; labels are Cityscapes train ids (:mod:`taplab.data.labels`).

How it stays exact and fast: every surface is a texture resampled through an
analytic mapping (ground and facades are planes, sprites are fronto-parallel
planes whose limbs rotate about joints), so the flow of each pixel follows from
the same mapping evaluated at the previous frame's camera and pose. Rendering is
a handful of vectorised numpy/OpenCV calls per frame: one ``cv2.remap`` for the
static street, one ``cv2.warpAffine`` per sprite part.

Flow convention (the same everywhere in taplab): ``flow[t]`` is float32
``(H, W, 2)`` holding ``(dx, dy)`` in pixels with
``image[t][y, x] ~= image[t-1][y + dy, x + dx]`` (backward flow). ``flow[0]`` is 0.
For pixels that are newly uncovered or newly entered at ``t``, the flow is that
of the surface visible at ``t``, evaluated analytically at ``t-1`` (where that
surface point was, though hidden then). Objects that were behind the camera at
``t-1`` are projected as if at :data:`NEAR_M` / 2.

The camera: pinhole with horizontal field of view ``hfov_deg``, ``camera_height_m``
above a flat ground, moving forward at ``ego_speed_mps``. Panning and shake are
modelled as a shift of the principal point (a small-angle rotation), so that the
ground and facades stay planes with closed-form flow.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from taplab.data import _synth_assets as assets
from taplab.data import layout
from taplab.data._synth_assets import TRANSPARENT, BodyTiles, Tile
from taplab.data.labels import CLASS_NAMES
from taplab.errors import ConfigError
from taplab.files import atomic_path, write_image

#: sprites closer than this (metres in front of the camera) are not drawn
NEAR_M = 1.0
#: the static street's depth is clamped here (metres): beyond it texture would only alias
FAR_M = 1000.0
#: the facade texture repeats every this many metres along the street
STRIP_PERIOD_M = 120.0
#: facades are drawn up to this height (metres); above is sky
FACADE_HEIGHT_M = 24.0
#: facade texture resolution (pixels per metre) for 1024-pixel-wide frames; scaled with the width.
#: A facade at the image border of a 60-degree camera is seen at about this resolution.
TEXTURE_PX_PER_M_AT_1024 = 20.0
#: the ground texture has this many times the resolution of the facades (it is seen closer)
GROUND_RESOLUTION_FACTOR = 2.0
#: sprites (people, cars, poles) have this many times the resolution of the facades (seen closer still)
SPRITE_RESOLUTION_FACTOR = 3.0
#: period of the camera's vertical shake (seconds); its amplitude is ``SynthConfig.shake_deg``
SHAKE_PERIOD_S = 0.9
#: walking: metres per gait cycle, leg and arm swing amplitudes (radians)
STRIDE_M = 1.4
LEG_SWING = 0.45
ARM_SWING = 0.35
#: cyclists: wheel radius (metres), pedalling leg angle about the vertical, its amplitude (radians)
WHEEL_R_M = 0.34
RIDER_LEG_ANGLE = 0.55
RIDER_LEG_SWING = 0.35
RIDER_LEAN = 0.35
#: distinct pole and tree sprites per clip (each placed many times along the street)
FURNITURE_VARIANTS = 5
#: minimum gap between two vehicles in a lane (metres, front to front)
VEHICLE_GAP_M = 9.0
#: speeds (m/s): crossing pedestrians, crossing cyclists, oncoming traffic
WALK_SPEED_MPS = (0.7, 1.8)
CYCLE_SPEED_MPS = (3.0, 6.0)
ONCOMING_SPEED_MPS = (7.0, 14.0)
#: fraction of vehicles that are trucks, and buses
TRUCK_SHARE = 0.1
BUS_SHARE = 0.1
#: standard deviation of uniform 8-bit noise (0..255), used to scale the sensor noise
_UNIFORM_U8_STD = 255.0 / math.sqrt(12.0)


@dataclass(frozen=True)
class SynthConfig:
    """One synthetic clip. Sizes in pixels, distances in metres, speeds per second.

    Attributes:
        height, width: frame size in pixels; even and >= 64 (4:2:0 video needs even sizes).
        frames: number of frames.
        seed: everything (layout, looks, motion, noise) follows from it.
        fps: frame rate; motion per frame is speed / fps.
        hfov_deg: horizontal field of view of the pinhole camera.
        horizon: row of the horizon as a fraction of the height (0 top .. 1 bottom).
        camera_height_m: camera height above the ground.
        ego_speed_mps: forward speed of the camera.
        pan_deg_per_s: peak angular speed of the camera's sinusoidal pan.
        pan_period_s: period of that pan.
        shake_deg: amplitude of the camera's vertical shake (period :data:`SHAKE_PERIOD_S`).
        road_half_width_m: half the road's width; lanes are 3.5 m, the camera drives in the middle one.
        sidewalk_width_m: width of each sidewalk; facades stand at road_half_width_m + sidewalk_width_m.
        cars: number of vehicles (cars, some trucks and buses) spread over the lanes.
        people: number of pedestrians (walking across, some standing).
        cyclists: number of cyclists (riding across).
        pole_spacing_m: mean distance between poles (with signs, traffic lights) on each side; 0 for none.
        tree_spacing_m: mean distance between street trees on each side; 0 for none.
        max_depth_m: sprites farther than this are not drawn.
        noise_std: standard deviation of the sensor noise, in 8-bit levels.
        lighting_change: relative change of exposure from the first to the last frame (0: constant).
        color_jitter: per-clip random variation of every colour's brightness and tint (relative).
        cloudiness: fraction of the sky covered by clouds.
        texture_px_per_m: resolution of the facade textures (the ground gets GROUND_RESOLUTION_FACTOR x,
            sprites SPRITE_RESOLUTION_FACTOR x); None: TEXTURE_PX_PER_M_AT_1024 scaled with the width, so
            that textures are neither blurred nor minified (aliased) more at one frame size than another.
    """

    height: int = 512
    width: int = 1024
    frames: int = 30
    seed: int = 0
    fps: float = 25.0
    hfov_deg: float = 60.0
    horizon: float = 0.45
    camera_height_m: float = 1.5
    ego_speed_mps: float = 8.0
    pan_deg_per_s: float = 4.0
    pan_period_s: float = 5.0
    shake_deg: float = 0.15
    road_half_width_m: float = 5.25
    sidewalk_width_m: float = 4.0
    cars: int = 8
    people: int = 8
    cyclists: int = 2
    pole_spacing_m: float = 16.0
    tree_spacing_m: float = 14.0
    max_depth_m: float = 90.0
    noise_std: float = 2.0
    lighting_change: float = 0.2
    color_jitter: float = 0.15
    cloudiness: float = 0.35
    texture_px_per_m: float | None = None

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 64 or v % 2:
                raise ConfigError(f"{name} must be an even integer >= 64, got {v!r}")
        for name in ("frames", "seed", "cars", "people", "cyclists"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        if self.frames < 1:
            raise ConfigError(f"frames must be >= 1, got {self.frames}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")
        positive = ("fps", "camera_height_m", "pan_period_s", "road_half_width_m", "sidewalk_width_m",
                    "max_depth_m")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.camera_height_m >= 2.5:  # higher, the see-through tops of the facades fall below the sky fill
            raise ConfigError(f"camera_height_m must be < 2.5 (a car's camera), got {self.camera_height_m}")
        non_negative = ("ego_speed_mps", "pan_deg_per_s", "shake_deg", "cars", "people", "cyclists",
                        "pole_spacing_m", "tree_spacing_m", "noise_std", "lighting_change", "color_jitter")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.texture_px_per_m is not None and not 2 <= self.texture_px_per_m <= 100:
            raise ConfigError(f"texture_px_per_m must be in 2..100 (or None), got {self.texture_px_per_m}")
        if not 1 <= self.hfov_deg <= 150:
            raise ConfigError(f"hfov_deg must be in 1..150, got {self.hfov_deg}")
        if not 0.05 <= self.horizon <= 0.95:
            raise ConfigError(f"horizon must be in 0.05..0.95 (fraction of the height), got {self.horizon}")
        if not 0 <= self.cloudiness <= 1:
            raise ConfigError(f"cloudiness must be in 0..1, got {self.cloudiness}")
        if self.lighting_change >= 1:
            raise ConfigError(f"lighting_change must be < 1 (a relative exposure change), got {self.lighting_change}")
        if self.color_jitter >= 1:
            raise ConfigError(f"color_jitter must be < 1, got {self.color_jitter}")
        if self.road_half_width_m < assets.LANE_WIDTH_M / 2:
            raise ConfigError(f"road_half_width_m must be >= {assets.LANE_WIDTH_M / 2} (one lane)")
        if 0 < self.pole_spacing_m < 2 or 0 < self.tree_spacing_m < 2:
            raise ConfigError("pole_spacing_m and tree_spacing_m must be 0 (none) or >= 2 metres")

    @property
    def focal_px(self) -> float:
        """Focal length in pixels, from the width and the horizontal field of view."""
        return self.width / 2 / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def texture_ppm(self) -> float:
        """Texture pixels per metre of the facades: ``texture_px_per_m`` or its width-scaled default."""
        if self.texture_px_per_m is not None:
            return self.texture_px_per_m
        return max(TEXTURE_PX_PER_M_AT_1024 * self.width / 1024, 4.0)

    @property
    def facade_m(self) -> float:
        """Lateral distance of the facades from the camera (metres)."""
        return self.road_half_width_m + self.sidewalk_width_m


@dataclass
class SynthFrame:
    """One rendered frame.

    Attributes:
        index: frame number t, from 0.
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) uint8 Cityscapes train ids (never the ignore label).
        flow: (H, W, 2) float32 backward flow (dx, dy) in pixels: image[t][y, x] ~= image[t-1][y+dy, x+dx].
    """

    index: int
    image: np.ndarray
    labels: np.ndarray
    flow: np.ndarray


def generate(config: SynthConfig) -> Iterator[SynthFrame]:
    """Render the clip ``config`` frame by frame (deterministic in ``config.seed``; global RNGs untouched)."""
    scene = _Scene(config)
    for t in range(config.frames):
        yield scene.render(t)


# ---------------------------------------------------------------- camera


@dataclass(frozen=True)
class _Camera:
    """The camera at one instant: principal point (cx, cy) in pixels, distance driven z (metres)."""

    cx: float
    cy: float
    z: float


def _camera(config: SynthConfig, t: int, phases: tuple[float, float]) -> _Camera:
    s = t / config.fps
    f = config.focal_px
    # Small-angle pan: the principal point moves by f * angle. Peak angular speed = pan_deg_per_s.
    amp = math.radians(config.pan_deg_per_s) * config.pan_period_s / (2 * math.pi)
    pan = f * amp * math.sin(2 * math.pi * s / config.pan_period_s + phases[0])
    shake = f * math.radians(config.shake_deg) * math.sin(2 * math.pi * s / SHAKE_PERIOD_S + phases[1])
    return _Camera(config.width / 2 - pan, config.horizon * config.height - shake, config.ego_speed_mps * s)


# ---------------------------------------------------------------- actors (sprites that move)


def _rot(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _shift(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], dtype=np.float64)


_MIRROR = np.diag([-1.0, 1.0, 1.0])
_Parts = list[tuple[Tile, np.ndarray]]  # (tile, 3x3 affine: tile pixels -> object metres)


@dataclass
class _Actor:
    """A sprite object: lateral position ``x`` and street position ``z`` (metres) at time 0, moving
    at (vx, vz) m/s; object metres have x right, y down, origin on the ground under the object."""

    x: float
    z: float
    vx: float = 0.0
    vz: float = 0.0
    x_limit: float = math.inf  # hidden once |x| exceeds it (walked into a doorway)

    def at(self, s: float) -> tuple[float, float]:
        return self.x + self.vx * s, self.z + self.vz * s

    def parts(self, s: float) -> _Parts:
        raise NotImplementedError


@dataclass
class _Rigid(_Actor):
    tile: Tile | None = None

    def parts(self, s: float) -> _Parts:
        return [(self.tile, self.tile.to_local())]


@dataclass
class _Walker(_Actor):
    body: BodyTiles | None = None
    phase: float = 0.0

    def parts(self, s: float) -> _Parts:
        b = self.body
        cycle = 2 * math.pi * abs(self.vx) * s / STRIDE_M + self.phase
        if self.vx == 0:  # standing: a slow small sway
            cycle, leg, arm = 0.0, 0.0, 0.08 * math.sin(1.3 * s + self.phase)
        else:
            leg, arm = LEG_SWING * math.sin(cycle), ARM_SWING * math.sin(cycle)
        bob = -0.03 * abs(math.cos(cycle))
        hip = _shift(0, -b.hip_m + bob)
        shoulder = hip @ _shift(0, -b.shoulder_m)
        # a limb hanging along +y swings forward (+x) by a: rotate by -a in y-down coordinates
        parts = [
            (b.arm_back, shoulder @ _rot(-arm) @ b.arm_back.to_local()),
            (b.leg_back, hip @ _rot(leg) @ b.leg_back.to_local()),
            (b.body, hip @ b.body.to_local()),
            (b.leg, hip @ _rot(-leg) @ b.leg.to_local()),
            (b.arm, shoulder @ _rot(arm) @ b.arm.to_local()),
        ]
        return _facing(parts, self.vx)


@dataclass
class _Cyclist(_Actor):
    rider: BodyTiles | None = None
    frame: Tile | None = None
    wheel: Tile | None = None

    def parts(self, s: float) -> _Parts:
        r, travelled = self.rider, abs(self.vx) * s
        spin = travelled / WHEEL_R_M
        crank = spin / 2.5  # gear ratio: the cranks turn slower than the wheels
        saddle = _shift(0, -assets.SADDLE_M)
        half = assets.WHEEL_BASE_M / 2
        shoulder = saddle @ _shift(r.shoulder_m * math.sin(RIDER_LEAN), -r.shoulder_m * math.cos(RIDER_LEAN))
        wheel = self.wheel.to_local()
        parts = [
            (r.leg_back, saddle @ _rot(-RIDER_LEG_ANGLE - RIDER_LEG_SWING * math.sin(crank + math.pi))
             @ r.leg_back.to_local()),
            (self.wheel, _shift(-half, -WHEEL_R_M) @ _rot(spin) @ wheel),
            (self.wheel, _shift(half, -WHEEL_R_M) @ _rot(spin + 1.0) @ wheel),
            (self.frame, saddle @ self.frame.to_local()),
            (r.body, saddle @ r.body.to_local()),
            (r.leg, saddle @ _rot(-RIDER_LEG_ANGLE - RIDER_LEG_SWING * math.sin(crank)) @ r.leg.to_local()),
            (r.arm, shoulder @ _rot(-1.1) @ r.arm.to_local()),
        ]
        return _facing(parts, self.vx)


def _facing(parts: _Parts, vx: float) -> _Parts:
    """Side-view sprites are drawn facing +x; mirror them for walking towards -x."""
    if vx >= 0:
        return parts
    return [(tile, _MIRROR @ m) for tile, m in parts]


# ---------------------------------------------------------------- the scene


class _Scene:
    """Everything fixed for one clip (textures, layout, trajectories) and the per-frame renderer."""

    def __init__(self, config: SynthConfig):
        self.config = c = config
        layout_seq, noise_seq = np.random.SeedSequence(c.seed).spawn(2)
        rng = np.random.default_rng(layout_seq)
        self.noise_rng = np.random.default_rng(noise_seq)
        self.pal = assets.Palette(rng, c.color_jitter)
        self.phases = (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi)))
        self.exposure = 1.0 + c.color_jitter * float(rng.uniform(-0.5, 0.5))
        self.lighting_sign = float(rng.choice((-1.0, 1.0)))
        self.f = c.focal_px
        self._build_street(rng)
        self._build_sky(rng)
        self.actors = self._build_actors(rng)
        self.xs = np.arange(c.width, dtype=np.float32)
        self.ys = np.arange(c.height, dtype=np.float32)
        # per-frame scratch buffers (the frame's own arrays are new each time: callers keep them)
        self._map_x, self._map_y, self._buf = (np.empty((c.height, c.width), np.float32) for _ in range(3))

    # -- construction

    def _build_street(self, rng: np.random.Generator) -> None:
        """One texture atlas: [left facade | right facade | ground], so one remap draws the street."""
        c = self.config
        ppm = c.texture_ppm
        gppm = ppm * GROUND_RESOLUTION_FACTOR
        wrap = 2
        noise = assets.facade_noise(rng, length_m=STRIP_PERIOD_M, height_m=FACADE_HEIGHT_M, ppm=ppm)
        strips = [assets.facade_strip(rng, self.pal, n, ppm=ppm, wrap_px=wrap) for n in (noise, noise.flipped())]
        ground = assets.ground_tile(
            rng, self.pal, half_width_m=c.facade_m + 0.5, road_half_m=c.road_half_width_m,
            verge_m=min(1.5, c.sidewalk_width_m / 2), ppm=gppm,
        )
        rows = max(strips[0][0].shape[0] + 2, ground[0].shape[0])

        def pad(a: np.ndarray) -> np.ndarray:
            # Replicating the bottom row keeps underground look-ups (which the ground then covers) harmless.
            return np.pad(a, [(0, rows - a.shape[0])] + [(0, 0)] * (a.ndim - 1), mode="edge")

        self.atlas = np.ascontiguousarray(np.concatenate([pad(s[0]) for s in strips] + [pad(ground[0])], 1))
        self.atlas_labels = np.ascontiguousarray(np.concatenate([pad(s[1]) for s in strips] + [pad(ground[1])], 1))
        self.strip_cols = strips[0][0].shape[1]
        self.strip_period_m = (self.strip_cols - wrap) / ppm
        self.strip_ppm, self.ground_ppm = ppm, gppm
        self.ground_col0 = 2 * self.strip_cols
        self.ground_half_m = c.facade_m + 0.5
        if self.atlas.shape[1] >= 32767:
            raise ConfigError("texture_px_per_m too large: the street texture exceeds OpenCV's 32767-pixel limit")

    def _build_sky(self, rng: np.random.Generator) -> None:
        c = self.config
        margin = int(self.f * math.radians(c.shake_deg)) + 4
        self.sky_rows = int(c.horizon * c.height) + 2 * margin
        self.sky_horizon_row = int(c.horizon * c.height) + margin
        # The pan swings +-amp: a panorama that wide never shows a repeat (rounded to the noise cell).
        amp = self.f * math.radians(c.pan_deg_per_s) * c.pan_period_s / (2 * math.pi)
        period = 96 * -(-int(c.width + 2 * amp + 96) // 96)
        pano = assets.sky_panorama(rng, self.pal, self.sky_rows, period, c.cloudiness)
        self.sky_period = period
        self.sky = np.ascontiguousarray(np.concatenate([pano, pano[:, : c.width + 2]], 1))

    def _build_actors(self, rng: np.random.Generator) -> list[_Actor]:
        c = self.config
        duration = c.frames / c.fps
        z_end = c.ego_speed_mps * duration
        actors: list[_Actor] = []
        sprite_ppm = SPRITE_RESOLUTION_FACTOR * c.texture_ppm

        # street furniture: poles (signs, lights) at the kerb, trees near the facades; a few variants
        # of each, drawn once and reused, so that the set-up cost does not grow with the clip
        for spacing, lateral, make in (
            (c.pole_spacing_m, c.road_half_width_m + 0.45, assets.pole_tile),
            (c.tree_spacing_m, c.facade_m - 1.0, assets.tree_tile),
        ):
            if spacing <= 0:
                continue
            variants = [make(rng, self.pal, sprite_ppm) for _ in range(FURNITURE_VARIANTS)]
            for side in (-1, 1):
                z = rng.uniform(0, spacing)
                while z < z_end + c.max_depth_m:
                    actors.append(_Rigid(side * lateral, z, tile=variants[rng.integers(FURNITURE_VARIANTS)]))
                    z += spacing * rng.uniform(0.7, 1.3)

        # vehicles: oncoming lanes left of the camera's, same-direction lanes elsewhere
        n_lanes = int(2 * c.road_half_width_m // assets.LANE_WIDTH_M)
        centres = [-assets.LANE_WIDTH_M * (n_lanes - 1) / 2 + k * assets.LANE_WIDTH_M for k in range(n_lanes)]
        ego_lane = min(range(n_lanes), key=lambda k: abs(centres[k]))
        speeds = []
        for k, x in enumerate(centres):
            if x < centres[ego_lane] - 1e-6:
                speeds.append(-rng.uniform(*ONCOMING_SPEED_MPS))
            elif k == ego_lane:  # never slower than the camera: nobody crashes into the car ahead
                speeds.append(c.ego_speed_mps + rng.uniform(0.5, 3.0))
            else:
                speeds.append(c.ego_speed_mps + rng.uniform(-5.0, 5.0))
        per_lane = [c.cars // n_lanes + (k < c.cars % n_lanes) for k in rng.permutation(n_lanes)]
        for k, count in enumerate(per_lane):
            if count == 0:
                continue
            rel = speeds[k] - c.ego_speed_mps  # relative to the camera
            lo = 8.0 if k == ego_lane else min(NEAR_M - 8.0, NEAR_M - rel * duration)
            hi = 0.6 * c.max_depth_m + max(0.0, -rel * duration)
            zs = np.sort(rng.uniform(lo, max(hi, lo + 1), count))
            for i in range(1, count):
                zs[i] = max(zs[i], zs[i - 1] + VEHICLE_GAP_M)
            for z in zs:
                u = rng.random()
                kind = assets.TRUCK if u < TRUCK_SHARE else assets.BUS if u < TRUCK_SHARE + BUS_SHARE else assets.CAR
                tile = assets.car_tile(rng, self.pal, kind, front=speeds[k] < 0, ppm=sprite_ppm)
                actors.append(_Rigid(centres[k], float(z), vz=speeds[k], tile=tile))

        # pedestrians and cyclists crossing (side view, so their limbs and wheels move in the image)
        limit = c.facade_m - 0.4
        for i in range(c.people + c.cyclists):
            is_rider = i >= c.people
            span = CYCLE_SPEED_MPS if is_rider else WALK_SPEED_MPS
            speed = rng.uniform(*span) * rng.choice((-1, 1))
            if not is_rider and rng.random() < 0.15:
                speed = 0.0
            x, z = rng.uniform(-limit, limit), rng.uniform(6.0, 0.5 * c.max_depth_m)
            if is_rider:
                frame, wheel = assets.bicycle_tiles(rng, self.pal, sprite_ppm, WHEEL_R_M)
                rider = assets.body_tiles(rng, self.pal, assets.RIDER, sprite_ppm, lean=RIDER_LEAN)
                actors.append(_Cyclist(x, z, vx=speed, x_limit=limit, rider=rider, frame=frame, wheel=wheel))
            else:
                body = assets.body_tiles(rng, self.pal, assets.PERSON, sprite_ppm)
                actors.append(_Walker(x, z, vx=speed, x_limit=limit, body=body, phase=rng.uniform(0, 2 * math.pi)))
        return actors

    # -- rendering

    def render(self, t: int) -> SynthFrame:
        c = self.config
        cam = _camera(c, t, self.phases)
        prev = _camera(c, max(t - 1, 0), self.phases)
        image = np.empty((c.height, c.width, 3), np.uint8)
        labels = np.empty((c.height, c.width), np.uint8)
        flow = self._render_street(cam, prev, image, labels)
        self._render_actors(t, cam, prev, image, labels, flow)
        if t == 0:
            flow[:] = 0
        return SynthFrame(t, self._expose(t, image), labels, flow)

    def _render_street(self, cam: _Camera, prev: _Camera, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Ground, facades and sky into ``image`` and ``labels``: one remap through the atlas, then the
        sky where the facades end. Returns the street's flow (H, W, 2)."""
        c, f, h, x0 = self.config, self.f, self.config.camera_height_m, self.config.facade_m
        xs = self.xs - np.float32(cam.cx)  # pixel offsets from the principal point
        ys = self.ys - np.float32(cam.cy)
        ax = np.maximum(np.abs(xs), np.float32(1e-3))
        split = min(max(math.floor(cam.cy) + 1, 0), c.height)  # rows from here on lie below the horizon
        below = np.maximum(ys[split:], np.float32(1e-3))
        # The ground is visible where its ray meets the ground inside the facades: |X| = |xs| h / ys < x0.
        ground = (below * np.float32(x0))[:, None] > (ax * np.float32(h))[None, :]

        # facades: depth per column Z = f x0 / |xs|, height per pixel Y = ys x0 / |xs| (y down)
        z_col = np.minimum(f * x0 / ax, FAR_M)
        u_col = np.mod(z_col + cam.z, self.strip_period_m) * self.strip_ppm + np.where(xs > 0, self.strip_cols, 0)
        v_scale = (x0 * self.strip_ppm / ax).astype(np.float32)
        # ground: depth per row Z = f h / ys, lateral X = xs h / ys per pixel
        z_row = np.minimum(f * h / below, FAR_M)
        v_row = (np.mod(z_row + cam.z, assets.GROUND_PERIOD_M) * self.ground_ppm).astype(np.float32)
        u_scale = (h * self.ground_ppm / below).astype(np.float32)

        map_x, map_y, buf = self._map_x, self._map_y, self._buf
        map_x[:] = u_col.astype(np.float32)
        np.multiply(ys[:, None], v_scale[None, :], out=map_y)
        map_y += np.float32((FACADE_HEIGHT_M - h) * self.strip_ppm)
        ground_x = buf[split:]
        np.multiply(xs[None, :], u_scale[:, None], out=ground_x)
        ground_x += np.float32(self.ground_col0 + self.ground_half_m * self.ground_ppm)
        np.copyto(map_x[split:], ground_x, where=ground)
        np.copyto(map_y[split:], v_row[:, None], where=ground)
        cv2.remap(self.atlas, map_x, map_y, cv2.INTER_LINEAR, dst=image, borderMode=cv2.BORDER_REPLICATE)
        cv2.remap(self.atlas_labels, map_x, map_y, cv2.INTER_NEAREST, dst=labels,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=TRANSPARENT)

        # sky: at infinity, so it only shifts with the principal point; facades end above the horizon
        rows = min(c.height, math.ceil(cam.cy) + 2)
        if rows > 0:
            a = (self.sky_period - cam.cx) % self.sky_period  # sky column of image column 0
            shift = np.array([[1, 0, a], [0, 1, self.sky_horizon_row - cam.cy]], np.float64)
            sky = cv2.warpAffine(self.sky, shift, (c.width, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
            is_sky = labels[:rows] == TRANSPARENT
            # cv2.copyTo writes into the numpy view in place, ~50x faster than np.copyto(where=) on RGB
            cv2.copyTo(sky, is_sky.view(np.uint8), image[:rows])
            labels[:rows][is_sky] = assets.SKY

        # A static point at depth Z, the camera advancing dz: x' - cx' = (x - cx) Z / (Z + dz). With
        # m = Z / (Z + dz) - 1 = -dz / (Z + dz): dx = xs m + (cx' - cx), dy = ys m + (cy' - cy); sky m = 0.
        dz = np.float32(cam.z - prev.z)
        m = buf
        m[:] = -dz * ax / (np.float32(f * x0) + dz * ax)
        np.copyto(m[split:], (-dz * below / (np.float32(f * h) + dz * below))[:, None], where=ground)
        if rows > 0:
            np.copyto(m[:rows], 0, where=is_sky)
        fx = m * xs[None, :]
        fx += np.float32(prev.cx - cam.cx)
        np.multiply(m, ys[:, None], out=m)
        m += np.float32(prev.cy - cam.cy)
        return cv2.merge([fx, m])

    def _projection(self, actor: _Actor, s: float, cam: _Camera) -> np.ndarray:
        """3x3 affine: object metres -> image pixels at time ``s`` (a fronto-parallel plane at the actor's
        depth). An actor behind the camera (only ever asked for at t-1) is projected as if at NEAR_M / 2
        in front of it: the documented best available flow for objects entering from behind."""
        x, z = actor.at(s)
        k = self.f / max(z - cam.z, NEAR_M / 2)
        return np.array([[k, 0, k * x + cam.cx], [0, k, k * self.config.camera_height_m + cam.cy], [0, 0, 1]])

    def _render_actors(self, t: int, cam: _Camera, prev: _Camera, image, labels, flow) -> None:
        c = self.config
        s, s_prev = t / c.fps, max(t - 1, 0) / c.fps
        visible = []
        for actor in self.actors:
            x, z = actor.at(s)
            if abs(x) <= actor.x_limit and NEAR_M <= z - cam.z <= c.max_depth_m:
                visible.append((z - cam.z, actor))
        visible.sort(key=lambda p: -p[0])  # back to front: nearer actors occlude farther ones
        for _, actor in visible:
            proj, proj_prev = self._projection(actor, s, cam), self._projection(actor, s_prev, prev)
            for (tile, local), (_, local_prev) in zip(actor.parts(s), actor.parts(s_prev)):
                self._draw_part(tile, proj @ local, proj_prev @ local_prev, image, labels, flow)

    def _draw_part(self, tile: Tile, a: np.ndarray, a_prev: np.ndarray, image, labels, flow) -> None:
        """Warp one tile by ``a`` (3x3, tile pixels -> image pixels) into its bounding box; its flow is
        the affine map a_prev a^-1 minus the identity. Scalar maths in Python floats: there are
        ~100 parts per frame and numpy's per-call overhead on 3x3 matrices would dominate."""
        (a00, a01, a02), (a10, a11, a12) = a[0].tolist(), a[1].tolist()
        h, w = tile.labels.shape
        corners = [(u, v) for u in (-0.5, w - 0.5) for v in (-0.5, h - 0.5)]  # the tile's outer edges
        cx = [a00 * u + a01 * v + a02 for u, v in corners]
        cy = [a10 * u + a11 * v + a12 for u, v in corners]
        x0, x1 = max(math.floor(min(cx)), 0), min(math.ceil(max(cx)) + 1, self.config.width)
        y0, y1 = max(math.floor(min(cy)), 0), min(math.ceil(max(cy)) + 1, self.config.height)
        if x1 <= x0 or y1 <= y0:
            return
        roi = np.array([[a00, a01, a02 - x0], [a10, a11, a12 - y0]])
        size = (x1 - x0, y1 - y0)
        lab = cv2.warpAffine(tile.labels, roi, size, flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=TRANSPARENT)
        mask = lab != TRANSPARENT
        if not mask.any():
            return
        mask = mask.view(np.uint8)
        rgb = cv2.warpAffine(tile.rgb, roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cv2.copyTo(rgb, mask, image[y0:y1, x0:x1])
        cv2.copyTo(lab, mask, labels[y0:y1, x0:x1])
        # m = a_prev a^-1, written out
        det = a00 * a11 - a01 * a10
        i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
        i02, i12 = -(i00 * a02 + i01 * a12), -(i10 * a02 + i11 * a12)
        (p00, p01, p02), (p10, p11, p12) = a_prev[0].tolist(), a_prev[1].tolist()
        m00, m01, m02 = p00 * i00 + p01 * i10, p00 * i01 + p01 * i11, p00 * i02 + p01 * i12 + p02
        m10, m11, m12 = p10 * i00 + p11 * i10, p10 * i01 + p11 * i11, p10 * i02 + p11 * i12 + p12
        gx, gy = self.xs[x0:x1], self.ys[y0:y1]
        fx = ((m00 - 1) * gx + m02)[None, :] + (m01 * gy)[:, None]
        fy = (m10 * gx + m12)[None, :] + ((m11 - 1) * gy)[:, None]
        cv2.copyTo(cv2.merge([fx, fy]), mask, flow[y0:y1, x0:x1])

    def _expose(self, t: int, image: np.ndarray) -> np.ndarray:
        """Lighting change (a linear exposure ramp over the clip) and uniform sensor noise, in one pass."""
        c = self.config
        progress = t / max(c.frames - 1, 1) - 0.5
        gain = self.exposure * (1.0 + self.lighting_sign * c.lighting_change * progress)
        if c.noise_std <= 0:
            return cv2.convertScaleAbs(image, alpha=gain)
        noise = np.frombuffer(self.noise_rng.bytes(image.size), np.uint8).reshape(image.shape)
        k = c.noise_std / _UNIFORM_U8_STD
        return cv2.addWeighted(image, gain, noise, k, -127.5 * k)


# ---------------------------------------------------------------- writing a clip


def write_clip(
    out_dir: str | os.PathLike[str],
    config: SynthConfig,
    *,
    gop: int = 12,
    codec: str = "mpeg4",
    bframes: int = 0,
    quality: int | None = None,
    name: str = "synth",
    images: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render ``config`` and write it in a Cityscapes-like layout (:mod:`taplab.data.layout`) under ``out_dir``:

    ``video/<name>.mp4`` (encoded by :func:`taplab.codec.encoder.encode` with ``gop``, ``codec``,
    ``bframes``, ``quality``), ``gtFine/<name>/<name>_<t:06d>_gtFine_labelTrainIds.png``,
    ``flow/<name>.npz`` (key ``flow``, float16 (T, H, W, 2), taplab's backward convention),
    ``leftImg8bit/<name>/<name>_<t:06d>_leftImg8bit.png`` only when ``images``, and ``meta.json``.

    ``progress`` is called with the index t of each frame once it is written. Returns the video path.
    Raises :class:`~taplab.errors.EncodeError` for bad encoder options.
    """
    from taplab.codec.encoder import check_encoding, encode

    if not name or any(ch in name for ch in "/\\") or name.startswith("."):
        raise ConfigError(f"name must be a plain file name stem, got {name!r}")
    check_encoding(codec, gop, bframes, quality)  # before any folder is made: bad options leave nothing behind
    out = Path(out_dir)
    video_path, flow_path = layout.clip_video_path(out, name), layout.clip_flow_path(out, name)
    folders = [video_path.parent, flow_path.parent, layout.clip_labels_dir(out, name)]
    for d in folders + ([layout.clip_images_dir(out, name)] if images else []):
        d.mkdir(parents=True, exist_ok=True)
    flow = np.empty((config.frames, config.height, config.width, 2), np.float16)

    def frames() -> Iterator[np.ndarray]:
        for frame in generate(config):
            t = frame.index
            write_image(layout.clip_label_path(out, name, t), frame.labels)
            if images:
                write_image(layout.clip_image_path(out, name, t), frame.image)
            flow[t] = frame.flow
            yield frame.image
            if progress is not None:
                progress(t)

    video = encode(frames(), video_path, gop=gop, codec=codec, bframes=bframes, quality=quality, fps=config.fps)
    _atomic(flow_path, lambda p: np.savez(p, flow=flow))
    meta = {
        "name": name,
        "seed": config.seed,
        "size": [config.height, config.width],
        "frames": config.frames,
        "fps": config.fps,
        "gop": gop,
        "codec": codec,
        "bframes": bframes,
        "quality": quality,
        "classes": list(CLASS_NAMES),
        "flow": "backward: image[t][y, x] ~= image[t-1][y + dy, x + dx]; flow[0] = 0; float16 pixels",
        "config": asdict(config),
    }
    _atomic(out / "meta.json", lambda p: Path(p).write_text(json.dumps(meta, indent=2) + "\n"))
    return video


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


__all__ = ["SynthConfig", "SynthFrame", "generate", "write_clip"]
