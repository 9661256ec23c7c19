"""Baselines that are not a runtime configuration: interpolation between key frames (the TapLab paper's ITP).

(The per-frame baseline is ``Segmenter(ffw=False)``; the optical-flow and ground-truth-flow baselines
are the runtime's ``motion_source``.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from taplab.codec import open_video
from taplab.data.transforms import to_tensor
from taplab.ops.labels import upsample_labels
from taplab.runtime.result import FrameResult, Kind


def interpolate_keys(model, source) -> Iterator[FrameResult]:
    """ITP: the CNN on the I-frames only; every other frame's logits are interpolated linearly in time
    between the previous and the next I-frame's (held after the last one).

    Non-causal: a frame's result waits for the next key frame, so this is an offline baseline. Its
    cost: the CNN on key frames (``cnn_full``), the blend (``interpolate``) and the labels, per frame.
    Results come in display order with ``kind`` ``"key-I"`` or ``"interp"`` (:class:`~taplab.runtime.Kind`).
    """
    pending: list = []  # (frame index, pict type, decode seconds) since the last key frame
    last = None  # (index, logits) of the last key frame
    with open_video(source) as video:
        frames = iter(video)
        while True:
            start = time.perf_counter()
            frame = next(frames, None)
            decode = time.perf_counter() - start
            if frame is None or frame.pict_type == "I" or last is None:
                key = None
                if frame is not None:
                    start = time.perf_counter()
                    key = (frame.index, model.logits(to_tensor(frame.image))[0].float())
                    cnn = time.perf_counter() - start
                yield from _emit(pending, last, key, (video.height, video.width))
                pending = []
                if frame is None:
                    return
                last = key
                start = time.perf_counter()
                labels = upsample_labels(key[1], (video.height, video.width))
                yield FrameResult(frame.index, frame.pict_type, Kind.KEY_I, labels,
                                  timings={"decode": decode, "cnn_full": cnn, "labels": time.perf_counter() - start})
            else:
                pending.append((frame.index, frame.pict_type, decode))


def _emit(pending, last, following, size) -> Iterator[FrameResult]:
    for index, pict_type, decode in pending:
        start = time.perf_counter()
        if following is None:
            logits = last[1]
        else:
            a = (index - last[0]) / (following[0] - last[0])
            logits = last[1] * (1 - a) + following[1] * a
        blend = time.perf_counter() - start
        start = time.perf_counter()
        labels = upsample_labels(logits, size)
        yield FrameResult(index, pict_type, Kind.INTERP, labels,
                          timings={"decode": decode, "interpolate": blend, "labels": time.perf_counter() - start})
