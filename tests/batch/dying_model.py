"""A fake model for one unit, the batch's handling of a worker process that dies: a real (untrained) CNN that ends
its process, as the kernel's out-of-memory killer would, when it is given frames 96 pixels high in a worker process
(never in the test's own process, where the batch's first worker runs in a thread)."""

import multiprocessing
import os

from tests.nets.user_models import TinySegmenter

DEADLY_HEIGHT = 96


class DiesOnShortFrames(TinySegmenter):
    def forward(self, x):
        if x.shape[-2] == DEADLY_HEIGHT and multiprocessing.parent_process() is not None:
            os._exit(9)
        return super().forward(x)


def make():
    return DiesOnShortFrames()
