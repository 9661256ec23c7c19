"""What the synthetic street looks like: procedural textures, facade strips and sprite tiles.

Private helper of :mod:`taplab.data.synth`. Everything here runs once per clip
(tens of milliseconds) and returns plain arrays; the per-frame renderer only
resamples them. Geometry lives in ``synth``; this module only knows metres on a
surface and pixels of a texture (``ppm``: texture pixels per metre).

Every texture is a base colour modulated by fractal value noise, so that each
class has a distinctive appearance (grain, structure, colour range) that still
varies per clip: base colours pass through :func:`jitter` with the clip's
``color_jitter``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from taplab.data.labels import TRAIN_ID

#: label value of "nothing here" inside tiles and strips; never reaches a frame's labels
#: (the sky fills whatever no surface covers).
TRANSPARENT = 255

ROAD, SIDEWALK, BUILDING, WALL, FENCE = (TRAIN_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEGETATION, TERRAIN = (
    TRAIN_ID[n] for n in ("pole", "traffic light", "traffic sign", "vegetation", "terrain")
)
SKY, PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = (
    TRAIN_ID[n] for n in ("sky", "person", "rider", "car", "truck", "bus", "bicycle")
)

#: base colours (RGB) before the per-clip jitter; pairs are (base, alternative) mixed by coarse noise
COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "asphalt": ((84, 84, 88), (70, 68, 66)),
    "marking": ((228, 226, 214), (200, 200, 190)),
    "sidewalk": ((156, 146, 140), (132, 128, 126)),
    "kerb": ((176, 174, 170), (150, 150, 148)),
    "terrain": ((112, 122, 58), (128, 104, 70)),
    "window": ((38, 48, 62), (70, 86, 100)),
    "wall": ((158, 154, 146), (128, 122, 116)),
    "fence": ((122, 98, 72), (92, 88, 84)),
    "vegetation": ((58, 98, 38), (96, 120, 44)),
    "trunk": ((78, 60, 44), (58, 48, 40)),
    "sky_top": ((72, 118, 196), (120, 130, 150)),
    "sky_horizon": ((188, 204, 222), (200, 200, 204)),
    "cloud": ((242, 242, 246), (200, 204, 212)),
    "metal": ((118, 120, 126), (150, 152, 156)),
    "tyre": ((28, 28, 30), (44, 44, 46)),
}
#: facade colours to pick from per building
FACADES = ((178, 160, 140), (160, 118, 98), (204, 192, 170), (122, 112, 106), (192, 172, 128), (140, 150, 162))
#: car paints to pick from per car
PAINTS = ((230, 230, 232), (30, 30, 34), (150, 152, 158), (160, 30, 30), (30, 60, 140), (40, 90, 60), (200, 160, 40))
SKIN = ((224, 180, 150), (190, 140, 100), (140, 96, 64), (96, 64, 44))

# Street furniture and buildings, in metres.
FLOOR_HEIGHT_M = 3.2
WINDOW_SPACING_M = 2.6
WINDOW_SIZE_M = (1.2, 1.6)  # width, height
BUILDING_WIDTH_M = (8.0, 22.0)
BUILDING_HEIGHT_M = (7.0, 22.0)
GAP_WIDTH_M = (4.0, 12.0)
LANE_WIDTH_M = 3.5
MARKING_WIDTH_M = 0.12
DASH_M = (3.0, 9.0)  # painted, gap
SLAB_M = 0.6  # sidewalk paving slab side
CROSSWALK_M = 4.0  # depth of the zebra crossing drawn once per ground period
GROUND_PERIOD_M = 24.0  # the ground texture repeats every this many metres (a multiple of sum(DASH_M))

SADDLE_M = 0.85  # saddle height above the ground
WHEEL_BASE_M = 1.04

_BLEED_PX = 9  # box-filter size used to bleed sprite colours into their transparent border (no dark halos)


def jitter(rng: np.random.Generator, rgb, amount: float) -> np.ndarray:
    """A colour with random brightness (+-amount) and tint (+-amount/2 per channel); float32 RGB."""
    rgb = np.asarray(rgb, np.float32)
    gain = 1.0 + amount * rng.uniform(-1, 1)
    tint = 1.0 + 0.5 * amount * rng.uniform(-1, 1, 3)
    return (rgb * gain * tint).astype(np.float32)


def fractal_noise(rng: np.random.Generator, h: int, w: int, cell: int, octaves: int = 3) -> np.ndarray:
    """(h, w) float32 value noise of unit std; features about ``cell`` pixels wide, finer octaves at half
    amplitude. Periodic in both axes when h and w are multiples of ``cell`` (textures that wrap need that)."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for o in range(octaves):
        c = max(cell >> o, 1)
        gh, gw = -(-h // c), -(-w // c)
        # uniform bytes are ten times cheaper to draw than normals and look the same once interpolated
        grid = np.frombuffer(rng.bytes(gh * gw), np.uint8).reshape(gh, gw).astype(np.float32) - 127.5
        grid = np.pad(grid, 2, mode="wrap")
        up = grid if c == 1 else cv2.resize(grid, ((gw + 4) * c, (gh + 4) * c), interpolation=cv2.INTER_CUBIC)
        out += amp * up[2 * c : 2 * c + h, 2 * c : 2 * c + w]
        amp *= 0.5
    return out / max(float(out.std()), 1e-6)


def to_u8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb, 0, 255).astype(np.uint8)


class Palette:
    """The clip's colours: every entry of :data:`COLORS` jittered once, so one clip is consistent
    but two clips differ."""

    def __init__(self, rng: np.random.Generator, amount: float):
        self.amount = amount
        self.colors = {k: tuple(jitter(rng, c, amount) for c in pair) for k, pair in COLORS.items()}
        self.grain = GrainBank(rng)

    def __getitem__(self, name: str) -> tuple:
        return self.colors[name]


@dataclass
class Noise:
    """Noise fields shared by every material of one texture (materials occupy disjoint pixels, so
    sharing costs no variety): ``fine`` grain, ``coarse`` blotches, ``mix`` in [0, 1] between a
    material's two colours."""

    fine: np.ndarray
    coarse: np.ndarray
    mix: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, h: int, w: int, fine_cell: int, coarse_cell: int, mix_cell: int) -> "Noise":
        mix = np.clip(0.5 + 0.35 * fractal_noise(rng, h, w, mix_cell, 2), 0, 1)
        return cls(fractal_noise(rng, h, w, fine_cell, 2), fractal_noise(rng, h, w, coarse_cell, 2), mix)

    def flipped(self) -> "Noise":
        """The same fields mirrored in both axes: a second, different-looking texture for free."""
        return Noise(*(a[::-1, ::-1] for a in (self.fine, self.coarse, self.mix)))


class Materials:
    """A material table (index 0 is black, for TRANSPARENT pixels): index -> two colours and the
    amplitudes of fine and coarse brightness noise. :meth:`shade` turns an index map into RGB."""

    def __init__(self) -> None:
        self.base, self.alt, self.fine, self.coarse = [(0, 0, 0)], [(0, 0, 0)], [0.0], [0.0]

    def add(self, colors, fine: float, coarse: float = 0.0, gain: float = 1.0) -> int:
        if len(self.base) == 256:
            raise ValueError("more than 255 materials in one texture")
        base, alt = colors
        self.base.append(np.asarray(base) * gain)
        self.alt.append(np.asarray(alt) * gain)
        self.fine.append(fine)
        self.coarse.append(coarse)
        return len(self.base) - 1

    def shade(self, index: np.ndarray, noise: Noise) -> np.ndarray:
        """(h, w) uint8 material indices -> (h, w, 3) uint8 RGB (OpenCV look-ups: numpy gathers are slow)."""

        def lut(values) -> np.ndarray:
            table = np.zeros((256, 1, 3), np.float32)
            table[: len(values), 0] = np.asarray(values, np.float32).reshape(len(values), -1)
            return to_u8(table)

        index3 = cv2.merge([index, index, index])
        colour = cv2.blendLinear(cv2.LUT(index3, lut(self.base)), cv2.LUT(index3, lut(self.alt)), 1 - noise.mix,
                                 np.ascontiguousarray(noise.mix))
        # amplitudes go through a uint8 table in units of 1/255
        fine = cv2.LUT(index, lut(np.multiply(self.fine, 255.0))[..., 0].copy()).astype(np.float32) / 255.0
        coarse = cv2.LUT(index, lut(np.multiply(self.coarse, 255.0))[..., 0].copy()).astype(np.float32) / 255.0
        lum = 1.0 + fine * noise.fine + coarse * noise.coarse
        return cv2.multiply(colour, cv2.merge([lum, lum, lum]), dtype=cv2.CV_8U)


# ---------------------------------------------------------------- ground, facades, sky


def ground_tile(
    rng: np.random.Generator, pal: Palette, *, half_width_m: float, road_half_m: float, verge_m: float, ppm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Top-down ground texture covering X in [-half_width_m, half_width_m] (columns) and one period
    Z in [0, GROUND_PERIOD_M) (rows), plus one wrap row so bilinear sampling across the seam is exact.

    Road with lane markings and a zebra crossing, kerbs, paved sidewalks, grass verges at the outside.
    Returns (rgb uint8 (rows + 1, cols, 3), labels uint8 (rows + 1, cols)).
    """
    cols = int(round(2 * half_width_m * ppm))
    rows = int(round(GROUND_PERIOD_M * ppm))
    x = ((np.arange(cols) + 0.5) / ppm - half_width_m).astype(np.float32)[None, :]
    z = ((np.arange(rows) + 0.5) / ppm).astype(np.float32)[:, None]
    ax = np.abs(x)
    mats = Materials()
    asphalt = mats.add(pal["asphalt"], fine=0.12, coarse=0.05)
    sidewalk = mats.add(pal["sidewalk"], fine=0.06, coarse=0.04)
    joint = mats.add(pal["sidewalk"], fine=0.06, gain=0.72)
    kerb = mats.add(pal["kerb"], fine=0.05)
    terrain = mats.add(pal["terrain"], fine=0.22, coarse=0.1)
    paint = mats.add(pal["marking"], fine=0.06)

    is_road = np.broadcast_to(ax < road_half_m, (rows, cols))
    index = np.where(is_road, asphalt, sidewalk).astype(np.uint8)
    labels = np.where(is_road, ROAD, SIDEWALK).astype(np.uint8)
    slab_joint = ((np.mod(z, SLAB_M) < 0.03) | (np.mod(ax, SLAB_M) < 0.03)) & ~is_road
    index[slab_joint] = joint
    index[np.broadcast_to((ax >= road_half_m) & (ax < road_half_m + 0.25), (rows, cols))] = kerb
    # grass verges along the facades, interrupted every few metres by entrances
    verge = (ax > half_width_m - verge_m) & (np.mod(z + rng.uniform(0, 8), 8.0) < 5.5)
    index[verge] = terrain
    labels[verge] = TERRAIN
    # markings are road (as in Cityscapes): lane dividers dashed, road edges solid, one zebra crossing
    dash = np.mod(z, sum(DASH_M)) < DASH_M[0]
    marks = np.zeros((rows, cols), bool)
    for centre in np.arange(-road_half_m + LANE_WIDTH_M, road_half_m - 0.5, LANE_WIDTH_M):
        marks |= (np.abs(x - centre) < MARKING_WIDTH_M / 2) & dash
    marks |= np.abs(ax - (road_half_m - 0.3)) < MARKING_WIDTH_M / 2
    z_cross = rng.uniform(0, GROUND_PERIOD_M - CROSSWALK_M - 1)
    marks |= (z > z_cross) & (z < z_cross + CROSSWALK_M) & (ax < road_half_m - 0.5) & (np.mod(x, 1.0) < 0.5)
    index[marks & is_road] = paint

    rgb = mats.shade(index, Noise.make(rng, rows, cols, 2, 16, 96))
    # tyre tracks: darker bands along the middle of each wheel path
    lane_pos = np.mod(x + LANE_WIDTH_M / 2, LANE_WIDTH_M)
    tracks = 1.0 - 0.1 * np.exp(-(((np.abs(lane_pos - LANE_WIDTH_M / 2) - 0.9) / 0.35) ** 2)) * (ax < road_half_m)
    rgb = to_u8(rgb * tracks[..., None])
    return np.concatenate([rgb, rgb[:1]]), np.concatenate([labels, labels[:1]])


def facade_noise(rng: np.random.Generator, *, length_m: float, height_m: float, ppm: float) -> Noise:
    """The noise fields of a facade strip (share them between the two sides with :meth:`Noise.flipped`)."""
    return Noise.make(rng, int(round(height_m * ppm)), int(round(length_m * ppm)), 3, 16, 24)


def facade_strip(
    rng: np.random.Generator, pal: Palette, noise: Noise, *, ppm: float, wrap_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """One side of the street unrolled, as large as ``noise``: columns run along Z (periodic), rows
    from the top (row 0) down to the ground (last row), ``ppm`` pixels per metre.

    Buildings with windows, separated by gaps of vegetation behind walls or fences. Every column is
    opaque from the ground up to its silhouette and TRANSPARENT above (that is where the sky shows).
    ``wrap_px`` columns from the start are appended so that bilinear sampling across the seam is exact.
    """
    rows, cols = noise.fine.shape
    height_m = rows / ppm
    index = np.zeros((rows, cols), np.uint8)
    labels = np.full((rows, cols), TRANSPARENT, np.uint8)
    height = ((rows - np.arange(rows) - 0.5) / ppm).astype(np.float32)[:, None]  # metres above ground
    mats = Materials()
    veg = mats.add(pal["vegetation"], fine=0.35, coarse=0.15)
    wall = mats.add(pal["wall"], fine=0.08, coarse=0.06)
    fence = mats.add(pal["fence"], fine=0.10)
    glass = mats.add(pal["window"], fine=0.05, coarse=0.25)

    start = 0
    while start < cols:
        building = rng.random() < 0.65
        span = BUILDING_WIDTH_M if building else GAP_WIDTH_M
        width = min(int(rng.uniform(*span) * ppm), cols - start)
        c = slice(start, start + width)
        u = ((np.arange(width) + 0.5) / ppm)[None, :]  # metres along this segment
        if building:
            top = min(rng.uniform(*BUILDING_HEIGHT_M), height_m - 0.5)
            colour = jitter(rng, FACADES[rng.integers(len(FACADES))], pal.amount)
            facade = mats.add((colour, colour * 0.9), fine=0.05, coarse=0.05)
            cornice = mats.add((colour, colour), fine=0.05, gain=0.7)
            body = np.broadcast_to(height < top, (rows, width))
            # windows on a regular grid, centred in the facade; a shop front on the ground floor
            margin = (width / ppm - WINDOW_SPACING_M * math.floor(width / ppm / WINDOW_SPACING_M)) / 2
            in_col = np.abs(np.mod(u - margin, WINDOW_SPACING_M) - WINDOW_SPACING_M / 2) < WINDOW_SIZE_M[0] / 2
            in_row = np.abs(np.mod(height, FLOOR_HEIGHT_M) - FLOOR_HEIGHT_M / 2) < WINDOW_SIZE_M[1] / 2
            upper = (height > FLOOR_HEIGHT_M) & (height < top - 1.0)
            shop = (height > 0.4) & (height < 2.6) & (u > 0.8) & (u < width / ppm - 0.8) & (np.mod(u, 5.0) > 0.6)
            seg = np.where(body, facade, 0).astype(np.uint8)
            seg[((in_col & in_row & upper) | shop) & body] = glass
            seg[np.broadcast_to(height > top - 0.35, (rows, width)) & body] = cornice
            index[:, c] = seg
            labels[:, c][body] = BUILDING
        else:
            # a smooth crown line of bushes and trees behind a wall or fence
            crown = 2.5 + 5.0 * np.clip(0.5 + 0.3 * fractal_noise(rng, 1, width, max(int(2 * ppm), 1), 2), 0, 1)
            green = np.broadcast_to(height < crown, (rows, width))
            index[:, c][green] = veg
            labels[:, c][green] = VEGETATION
            kind = rng.random()
            if kind < 0.45:
                low = np.broadcast_to(height < rng.uniform(1.0, 2.2), (rows, width))
                index[:, c][low] = wall
                labels[:, c][low] = WALL
            elif kind < 0.8:
                top = rng.uniform(1.0, 1.8)
                # vertical slats with vegetation showing between them (labelled per pixel)
                slat = (np.mod(u, 0.25) < 0.15) | (np.abs(height - top + 0.1) < 0.06) | (np.abs(height - 0.3) < 0.06)
                low = (height < top) & slat
                index[:, c][low] = fence
                labels[:, c][low] = FENCE
        start += width

    rgb = mats.shade(index, noise)
    return np.concatenate([rgb, rgb[:, :wrap_px]], 1), np.concatenate([labels, labels[:, :wrap_px]], 1)


def sky_panorama(rng: np.random.Generator, pal: Palette, rows: int, cols: int, cloudiness: float) -> np.ndarray:
    """(rows, cols, 3) uint8 sky, periodic along columns: a gradient from zenith (row 0) to the
    horizon (last row), with soft clouds covering about ``cloudiness`` of it."""
    t = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None, None] ** 0.7
    top, horizon = pal["sky_top"][0], pal["sky_horizon"][0]
    sky = top + (horizon - top) * t
    n = fractal_noise(rng, rows, cols, 96, 4)
    threshold = float(np.quantile(n, 1.0 - cloudiness)) if cloudiness > 0 else np.inf
    cover = np.clip((n - threshold) * 1.5, 0, 1)[..., None]
    shade = 1.0 - 0.12 * np.clip(fractal_noise(rng, rows, cols, 24, 2), -1, 1)[..., None]
    sky = sky + (pal["cloud"][0] * shade - sky) * cover
    return to_u8(sky)


class GrainBank:
    """One fine noise field per clip; sprites take windows of it at random offsets instead of
    drawing their own (there are tens of sprites per clip)."""

    def __init__(self, rng: np.random.Generator, size: int = 512):
        self.rng, self.size = rng, size
        # periodic (size is a multiple of the cell), so tiling it shows no seams
        self.field = np.tile(fractal_noise(rng, size, size, 2, 2), (2, 2))

    def take(self, h: int, w: int) -> np.ndarray:
        n, field = self.size, self.field
        if h > n or w > n:
            field = np.tile(field, (-(-h // n), -(-w // n)))
        y, x = self.rng.integers(0, n, 2)
        return field[y : y + h, x : x + w]


# ---------------------------------------------------------------- sprites


@dataclass
class Tile:
    """A sprite: RGB and labels (TRANSPARENT outside the shape) drawn at ``ppm`` pixels per metre.
    ``origin`` is the tile pixel (x, y) of the sprite's local origin (its joint or ground contact)."""

    rgb: np.ndarray
    labels: np.ndarray
    ppm: float
    origin: tuple[float, float]

    def to_local(self) -> np.ndarray:
        """3x3 affine: tile pixels -> local metres (x right, y down)."""
        s = 1.0 / self.ppm
        return np.array([[s, 0, -self.origin[0] * s], [0, s, -self.origin[1] * s], [0, 0, 1]])


class Canvas:
    """Draws a sprite in local metres: x in [x0, x1], y in [y0, y1] (y down, 0 = ground or joint)."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, ppm: float):
        self.ppm, self.x0, self.y0 = ppm, x0, y0
        w, h = int(math.ceil((x1 - x0) * ppm)) + 2, int(math.ceil((y1 - y0) * ppm)) + 2
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.labels = np.full((h, w), TRANSPARENT, np.uint8)

    def _px(self, pts) -> np.ndarray:
        pts = np.asarray(pts, np.float64)
        return np.round((pts - (self.x0, self.y0)) * self.ppm * 16).astype(np.int32)  # 4 fractional bits

    def poly(self, pts, colour, label: int) -> None:
        p = [self._px(pts)]
        cv2.fillPoly(self.rgb, p, tuple(float(v) for v in colour), cv2.LINE_8, 4)
        cv2.fillPoly(self.labels, p, label, cv2.LINE_8, 4)

    def rect(self, x0, y0, x1, y1, colour, label: int) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour, label)

    def ellipse(self, cx, cy, rx, ry, colour, label: int, thickness_m: float | None = None) -> None:
        c, axes = self._px((cx, cy)), (int(rx * self.ppm * 16), int(ry * self.ppm * 16))
        t = -1 if thickness_m is None else max(int(thickness_m * self.ppm), 1)
        cv2.ellipse(self.rgb, tuple(c), axes, 0, 0, 360, tuple(float(v) for v in colour), t, cv2.LINE_8, 4)
        cv2.ellipse(self.labels, tuple(c), axes, 0, 0, 360, label, t, cv2.LINE_8, 4)

    def line(self, a, b, width_m: float, colour, label: int) -> None:
        pa, pb = self._px(a), self._px(b)
        t = max(int(round(width_m * self.ppm)), 1)
        cv2.line(self.rgb, tuple(pa), tuple(pb), tuple(float(v) for v in colour), t, cv2.LINE_8, 4)
        cv2.line(self.labels, tuple(pa), tuple(pb), label, t, cv2.LINE_8, 4)

    def tile(self, pal: Palette, grain: float = 0.08) -> Tile:
        """Finish: add texture grain, bleed colours into the transparent border, return the tile."""
        h, w = self.labels.shape
        rgb = self.rgb * (1.0 + grain * pal.grain.take(h, w))[..., None]
        opaque = (self.labels != TRANSPARENT).astype(np.float32)
        # Bilinear sampling mixes border pixels into the sprite's edge: give them the edge's colours.
        k = (_BLEED_PX, _BLEED_PX)
        weight = cv2.blur(opaque, k)[..., None]
        bled = cv2.blur(rgb * opaque[..., None], k) / np.maximum(weight, 1e-6)
        rgb = np.where(opaque[..., None] > 0, rgb, bled)
        origin = (-self.x0 * self.ppm, -self.y0 * self.ppm)
        return Tile(to_u8(rgb), self.labels, self.ppm, origin)


def car_tile(rng: np.random.Generator, pal: Palette, kind: int, front: bool, ppm: float) -> Tile:
    """A vehicle seen from behind (or the front when ``front``): CAR, TRUCK or BUS; origin at the
    middle of its ground contact."""
    if kind == CAR:
        w, h = rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6)
    else:
        w, h = rng.uniform(2.4, 2.55), rng.uniform(3.0, 3.4)
    cv = Canvas(-w / 2, w / 2, -h, 0, ppm)
    paint = jitter(rng, PAINTS[rng.integers(len(PAINTS))], pal.amount)
    tyre, glass = pal["tyre"][0], pal["window"][0]
    for s in (-1, 1):  # wheels
        cv.rect(s * w / 2 - s * 0.05, -0.4, s * (w / 2 - 0.3), 0, tyre, kind)
    if kind == CAR:
        cv.rect(-w / 2, -0.95 * h * 0.62, w / 2, -0.22, paint, kind)
        cabin = [(-w / 2 + 0.05, -0.62 * h), (-w / 2 + 0.25, -h), (w / 2 - 0.25, -h), (w / 2 - 0.05, -0.62 * h)]
        cv.poly(cabin, paint, kind)
        cv.poly([(-w / 2 + 0.22, -0.66 * h), (-w / 2 + 0.36, -0.95 * h), (w / 2 - 0.36, -0.95 * h),
                 (w / 2 - 0.22, -0.66 * h)], glass, kind)
        lamp_y = -0.5 * h
    else:
        cv.rect(-w / 2, -h, w / 2, -0.3, paint, kind)
        if kind == BUS:
            cv.rect(-w / 2 + 0.1, -h + 0.25, w / 2 - 0.1, -h + 1.2, glass, kind)
        else:
            cv.rect(-0.03, -h + 0.1, 0.03, -0.35, paint * 0.7, kind)  # the cargo doors' seam
        lamp_y = -0.7
    lamp = (250, 250, 230) if front else (200, 20, 20)
    for s in (-1, 1):
        cv.rect(s * (w / 2 - 0.06), lamp_y - 0.12, s * (w / 2 - 0.3), lamp_y + 0.05, lamp, kind)
    cv.rect(-0.26, lamp_y + 0.1, 0.26, lamp_y + 0.22, (235, 235, 225), kind)  # number plate
    cv.rect(-w / 2, -0.32, w / 2, -0.2, paint * 0.5, kind)  # bumper
    return cv.tile(pal)


def pole_tile(rng: np.random.Generator, pal: Palette, ppm: float) -> Tile:
    """A pole, with a traffic sign or traffic light on it or a bare lamp post; origin at its foot."""
    height = rng.uniform(3.5, 6.5)
    metal = pal["metal"][0]
    cv = Canvas(-0.45, 0.45, -height - 0.1, 0, ppm)
    r = 0.06
    cv.rect(-r, -height, r, 0, metal, POLE)
    cv.rect(-r * 0.4, -height, 0, 0, metal * 1.2, POLE)  # a highlight: poles are round
    kind = rng.random()
    if kind < 0.5:
        y = -rng.uniform(2.2, min(3.0, height - 0.4))
        shape = rng.integers(3)
        if shape == 0:  # prohibitory: red ring on white
            cv.ellipse(0, y, 0.32, 0.32, (200, 30, 30), SIGN)
            cv.ellipse(0, y, 0.24, 0.24, (235, 235, 235), SIGN)
        elif shape == 1:  # warning: triangle
            cv.poly([(0, y - 0.33), (0.36, y + 0.28), (-0.36, y + 0.28)], (200, 30, 30), SIGN)
            cv.poly([(0, y - 0.2), (0.24, y + 0.2), (-0.24, y + 0.2)], (240, 240, 235), SIGN)
        else:  # information: blue square
            cv.rect(-0.32, y - 0.32, 0.32, y + 0.32, (30, 80, 170), SIGN)
            cv.rect(-0.1, y - 0.2, 0.1, y + 0.2, (235, 235, 235), SIGN)
    elif kind < 0.75:
        y = -height
        cv.rect(-0.16, y, 0.16, y + 0.85, (30, 32, 30), LIGHT)
        for i, col in enumerate(((200, 30, 20), (220, 160, 20), (40, 190, 80))):
            lit = 1.0 if i == rng.integers(3) else 0.35
            cv.ellipse(0, y + 0.15 + 0.27 * i, 0.09, 0.09, np.multiply(col, lit), LIGHT)
    return cv.tile(pal, 0.05)


def tree_tile(rng: np.random.Generator, pal: Palette, ppm: float) -> Tile:
    """A street tree (trunk and crown are both vegetation, as in Cityscapes); origin at its foot."""
    height, radius = rng.uniform(4.5, 7.5), rng.uniform(1.4, 2.4)
    cv = Canvas(-radius - 0.2, radius + 0.2, -height - 0.2, 0, ppm)
    centre = -height + radius
    for _ in range(7):  # a lumpy crown from overlapping blobs
        dx, dy = rng.uniform(-0.45, 0.45, 2) * radius
        r = rng.uniform(0.45, 0.65) * radius
        cv.ellipse(dx, centre + dy, r, r * 0.9, pal["vegetation"][0], VEGETATION)
    h, w = cv.labels.shape
    base, alt = pal["vegetation"]
    mix = np.clip(0.5 + 0.5 * pal.grain.take(h, w), 0, 1)[..., None]
    leaves = (base + (alt - base) * mix) * (1.0 + 0.3 * pal.grain.take(h, w))[..., None]
    crown = cv.labels == VEGETATION
    cv.rgb[crown] = leaves[crown]
    cv.rect(-0.13, centre + 0.3 * radius, 0.13, 0, pal["trunk"][0], VEGETATION)
    return cv.tile(pal, 0.05)


@dataclass
class BodyTiles:
    """The parts of a walking or riding person, each with its origin at its joint."""

    body: Tile  # torso and head; origin at the hip
    arm: Tile  # origin at the shoulder, hanging down
    leg: Tile  # origin at the hip, hanging down
    leg_back: Tile  # the far leg, a little darker
    arm_back: Tile
    hip_m: float  # hip height above the ground (walkers) or saddle (riders)
    shoulder_m: float  # shoulder above the hip


def body_tiles(rng: np.random.Generator, pal: Palette, label: int, ppm: float, lean: float = 0.0) -> BodyTiles:
    """A person in side view, in parts (the limbs swing about hip and shoulder); ``lean`` tilts the
    torso forward (radians), as a rider's."""
    scale = rng.uniform(0.9, 1.08)
    skin = jitter(rng, SKIN[rng.integers(len(SKIN))], 0.1)
    shirt = jitter(rng, rng.uniform(30, 230, 3), pal.amount)
    trousers = jitter(rng, rng.uniform(20, 140, 3), pal.amount)
    leg_len, arm_len, torso = 0.88 * scale, 0.66 * scale, 0.56 * scale

    cv = Canvas(-0.4, 0.4, -torso - 0.34 * scale, 0.08, ppm)
    sx, cx = math.sin(lean), math.cos(lean)
    top = (torso * sx, -torso * cx)
    cv.line((0, 0), top, 0.28 * scale, shirt, label)
    cv.ellipse(top[0] + 0.17 * scale * sx + 0.02, top[1] - 0.17 * scale * cx, 0.11 * scale, 0.12 * scale, skin, label)
    cv.ellipse(top[0] + 0.17 * scale * sx - 0.02, top[1] - 0.21 * scale * cx, 0.1 * scale, 0.07 * scale,
               skin * 0.35, label)  # hair
    body = cv.tile(pal)

    def limb(length: float, width: float, colour, end, end_len: float, shade: float) -> Tile:
        c = Canvas(-0.15, 0.2, -0.06, length + 0.06, ppm)
        c.line((0, 0), (0, length - end_len / 2), width, colour * shade, label)
        c.line((0, length - end_len), (0.08 if end_len < 0.15 else 0.0, length), width * 0.8, end * shade, label)
        return c.tile(pal)

    shoe = np.array((30, 28, 26), np.float32)
    return BodyTiles(
        body=body,
        arm=limb(arm_len, 0.09 * scale, shirt, skin, 0.16, 1.0),
        leg=limb(leg_len, 0.14 * scale, trousers, shoe, 0.1, 1.0),
        leg_back=limb(leg_len, 0.14 * scale, trousers, shoe, 0.1, 0.75),
        arm_back=limb(arm_len, 0.09 * scale, shirt, skin, 0.16, 0.75),
        hip_m=leg_len,
        shoulder_m=torso * 0.92,
    )


def bicycle_tiles(rng: np.random.Generator, pal: Palette, ppm: float, wheel_r: float) -> tuple[Tile, Tile]:
    """(frame, wheel) of a bicycle in side view: the frame's origin is the saddle, the wheel's its hub
    (it turns)."""
    paint = jitter(rng, rng.uniform(20, 230, 3), pal.amount)
    metal, tyre = pal["metal"][0], pal["tyre"][0]
    base = WHEEL_BASE_M / 2
    hub_y = SADDLE_M - wheel_r  # the hubs lie this far below the saddle (y down)
    cv = Canvas(-base - 0.1, base + 0.15, -0.15, hub_y + 0.1, ppm)
    crank = (0.0, hub_y + 0.05)
    for a, b in (((-base, hub_y), crank), (crank, (-0.05, 0.05)), ((-0.05, 0.05), (-base, hub_y)),
                 ((-0.05, 0.05), (base - 0.1, 0.0)), ((base - 0.1, 0.0), crank), ((base - 0.1, 0.0), (base, hub_y)),
                 ((base - 0.1, 0.0), (base - 0.05, -0.12))):
        cv.line(a, b, 0.04, paint, BICYCLE)
    cv.line((-0.12, -0.02), (0.06, -0.02), 0.05, tyre, BICYCLE)  # saddle
    cv.line((base - 0.12, -0.12), (base + 0.05, -0.12), 0.04, metal, BICYCLE)  # handlebar
    frame = cv.tile(pal, 0.04)

    wc = Canvas(-wheel_r - 0.05, wheel_r + 0.05, -wheel_r - 0.05, wheel_r + 0.05, ppm)
    wc.ellipse(0, 0, wheel_r - 0.02, wheel_r - 0.02, tyre, BICYCLE, thickness_m=0.05)
    for k in range(8):  # spokes make the rotation visible
        a = k * math.pi / 8
        wc.line((-math.cos(a) * wheel_r, -math.sin(a) * wheel_r), (math.cos(a) * wheel_r, math.sin(a) * wheel_r),
                0.012, metal, BICYCLE)
    wc.ellipse(0, 0, 0.05, 0.05, metal, BICYCLE)
    return frame, wc.tile(pal, 0.03)
