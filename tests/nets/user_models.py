"""Models "written elsewhere" for the loader tests: plain torch modules that know nothing of taplab."""

import torch
from torch import nn


class TinySegmenter(nn.Module):
    """A real (untrained) CNN honouring the contract: 5 classes at stride 2."""

    def __init__(self, classes: int = 5):
        super().__init__()
        with torch.random.fork_rng():  # fixed weights without touching the global RNG of other tests
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        return self.body(x)


class Normalised(TinySegmenter):
    """Expects ImageNet-normalised input and says so through ``mean``/``std``."""

    mean = (0.5, 0.4, 0.3)
    std = (0.2, 0.25, 0.5)


class NotLogits(nn.Module):
    """Returns one score per class for the whole image: (N, C), not a 4-D map."""

    def forward(self, x):
        return x.mean((2, 3))


class ReturnsDict(nn.Module):
    def forward(self, x):
        return {"out": x}


def make():
    return TinySegmenter()


def make_not_a_module():
    return "not a module"


def make_broken():
    raise RuntimeError("weights file missing")
