"""Does a learned motion refinement (the Dynamic Warping Network's FRM) pay on codec vectors? The measurement.

    python benchmarks/bench_frm.py [--steps 3000] [--real-frames 337]

FRM here: a small network (the frame at twice the feature grid, the warped logits' softmax and the coarse
distortion map in; two channels out) predicts, per cell, an offset of at most ``RADIUS`` cells to the
accumulated motion the runtime warped with. Refining the accumulated field by an offset and warping once
equals resampling the warped logits at the offset, which is what this does (one bilinear resample of the
warped logits: the refined warp's only extra cost). It cannot invent classes, only move what was warped.

It is trained exactly as ``taplab adapt`` trains the correction network (the same samples, crops, losses
against the model's own per-frame output, steps and seed; :mod:`taplab.adapt`), without labels, and
validated on the same held-out frames: fidelity (mIoU % against the per-frame output) of the held-out warped
frames without and with it, for

- synthetic footage: eight clips the model never saw (512x1024, 30 frames, MPEG-4 GOP 12; the last 30% of
  each held out), as docs/adapt.md's synthetic figures;
- the real 1280x720 MPEG-4 clip (its last 30% held out).

Its cost is timed at 1280x720 (median of 8 rounds). docs/adapt.md records the result. The module lives here,
not in taplab: it is kept only if it pays.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from taplab.adapt import AdaptConfig, collect, train, validate
from taplab.data.synth import SynthConfig, write_clip
from taplab.nets.conet import image_size
from taplab.nets.layers import Normalize, conv_bn_relu, fold_batchnorm, separable
from taplab.nets.loader import load_model

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
RADIUS = 2.0  #: the largest offset, in cells (8 pixels for a stride-4 model)
ALWAYS = 20.0  #: an edge logit whose sigmoid is 1: fusion's map is then 1 and the output is the refined logits


class MotionRefinement(nn.Module):
    """``forward(image, warped, coarse) -> (refined, edge)``, CoNet's interface, so that adaptation's training
    and validation take it as they are (with ``w_f = 0`` and ``edge`` always 1, fusion returns ``refined``)."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.scale = 1
        self.normalize = Normalize()
        self.stem = conv_bn_relu(3, 16, 3, stride=2)
        self.enter = nn.Sequential(conv_bn_relu(16 + num_classes + 1, width, 1), separable(width, width))
        self.body = nn.Sequential(conv_bn_relu(width, width, 3, dilation=2, groups=width), conv_bn_relu(width, width, 1),
                                  separable(width, width))
        self.offset = nn.Conv2d(width, 2, 3, padding=1)
        nn.init.zeros_(self.offset.weight)  # start as the identity: no offset
        nn.init.zeros_(self.offset.bias)

    def forward(self, image, warped, coarse):
        n, _, h, w = warped.shape
        if tuple(image.shape[-2:]) != image_size((h, w)):
            image = F.interpolate(image, size=image_size((h, w)), mode="area")
        x = self.enter(torch.cat([self.stem(self.normalize(image)), warped.softmax(1), coarse], 1))
        offset = torch.tanh(self.offset(x + self.body(x))) * RADIUS
        ys, xs = torch.meshgrid(torch.arange(h, dtype=warped.dtype), torch.arange(w, dtype=warped.dtype), indexing="ij")
        grid = torch.stack([(xs + offset[:, 0] + 0.5) / w * 2 - 1, (ys + offset[:, 1] + 0.5) / h * 2 - 1], -1)
        refined = F.grid_sample(warped, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return refined, torch.full((n, 1, h, w), ALWAYS)


class Refiner:
    """The trained module as :func:`taplab.adapt.validate` calls a correction: ``(image, warped, coarse) -> (updated,
    edge probability)`` on one frame."""

    def __init__(self, net: MotionRefinement):
        self.net = fold_batchnorm(net.eval())
        self.scale = 1

    @torch.inference_mode()
    def __call__(self, image, warped, coarse):
        refined, edge = self.net(image[None], warped[None], coarse[None, None])
        return refined[0], torch.sigmoid(edge[0, 0])


def measure(model, videos: list[str], cfg: AdaptConfig) -> tuple[float, float, int, int]:
    footage = collect(model, videos, cfg)
    torch.manual_seed(cfg.seed)
    net = MotionRefinement(model.num_classes)
    train(net, footage.train, cfg, weight=0.0)
    scores = validate(Refiner(net), footage.held, footage.size, model.num_classes, weight=0.0)
    return scores["warped"], scores["corrected"], len(footage.train), len(footage.held)


def cost(num_classes: int, repeats: int = 8) -> float:
    """ms per 1280x720 frame (grid 180x320) of the refinement: network and resample."""
    refiner = Refiner(MotionRefinement(num_classes))
    image, warped, coarse = torch.rand(3, 360, 640), torch.randn(num_classes, 180, 320), torch.rand(180, 320)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        refiner(image, warped, coarse)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--real-frames", type=int, default=337)
    args = parser.parse_args()
    model = load_model("default", device="cpu")
    print("| footage | warped frames trained on / held out | fidelity without | with FRM |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        videos = [str(write_clip(tmp, SynthConfig(height=512, width=1024, frames=30, seed=800000 + k), gop=12,
                                 name=f"clip{k}")) for k in range(1, 9)]
        before, after, n_train, n_held = measure(model, videos, AdaptConfig(steps=args.steps, labels=False, frames=30))
        print(f"| synthetic, 8 clips | {n_train} / {n_held} | {before:.1f} | {after:.1f} |", flush=True)
    if REAL.is_dir():
        clip = REAL / "vid_mpeg4_part2.mp4"
        before, after, n_train, n_held = measure(model, [str(clip)], AdaptConfig(steps=args.steps,
                                                                                 frames=args.real_frames))
        print(f"| {clip.name} | {n_train} / {n_held} | {before:.1f} | {after:.1f} |", flush=True)
    else:
        print(f"(the real clip is not at {REAL})", file=sys.stderr)
    print(f"\nCost at 1280x720: {cost(model.num_classes):.1f} ms per warped frame (network and resample).")


if __name__ == "__main__":
    main()
