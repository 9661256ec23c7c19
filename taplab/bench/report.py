"""The outputs of a sweep: CSV, markdown table, JSON record (machine, versions, configuration) and plots."""

from __future__ import annotations

import csv
import json
import platform
from dataclasses import asdict
from pathlib import Path

from taplab.files import atomic_path

#: the columns of the CSV (keys) and of the markdown table (headings)
COLUMNS = {"gop": "GOP", "size": "size", "label": "modules", "miou": "mIoU %", "fidelity": "fidelity %", "tc": "TC %",
           "tc_held": "TC held %",
           "change_key": "change at key %", "change_warped": "change warped %", "key_jump": "key jump x", "cl": "CL %",
           "key_share": "key frames %", "fps": "frames/s", "speed_model_fps": "speed model frames/s",
           "t_key_ms": "T_I ms", "t_warp_ms": "T_P ms"}


def write_report(out: Path, config, records: list[dict]) -> list[Path]:
    """Write ``results.csv``, ``results.md``, ``results.json`` and the PNG plots into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [_csv(out / "results.csv", records), _markdown(out / "results.md", config, records),
             _json(out / "results.json", config, records)]
    return paths + plots(out, records)


def _csv(path: Path, records: list[dict]) -> Path:
    stages = sorted({k for r in records for k in r["stages_ms"]})
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*COLUMNS, *(f"ms_{s}" for s in stages)])
        for r in records:
            writer.writerow([_cell(r[c]) for c in COLUMNS] + [r["stages_ms"].get(s, "") for s in stages])
    return path


def _markdown(path: Path, config, records: list[dict]) -> Path:
    lines = [f"# taplab bench: {config.data}, models {', '.join(config.models)}, codec {config.codec}", ""]
    truth = sorted({r["truth_tc"] for r in records if r.get("truth_tc") is not None})
    if truth:  # what TC a perfect segmentation would score: the scale every row's TC is read on
        lines += [f"The ground truth's own TC: {', '.join(map(str, truth))}% (TC held: 100 by definition).", ""]
    lines += ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) or "-" for c in COLUMNS) + " |" for r in records]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _json(path: Path, config, records: list[dict]) -> Path:
    import av
    import cv2
    import numpy
    import torch

    from taplab import __version__

    record = {"config": asdict(config), "records": records, "machine": {
        "platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "versions": {"taplab": __version__, "torch": torch.__version__, "av": av.__version__,
                     "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
                     "opencv": cv2.__version__, "numpy": numpy.__version__}}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def _cell(v) -> str:
    return "" if v is None else str(v)


def plots(out: Path, records: list[dict]) -> list[Path]:
    """``accuracy_vs_speed.png`` (mIoU, or fidelity without labels, against frames/s, the GOP written at
    each point, as the TapLab paper's Fig. 8), ``accuracy_by_distance.png`` and ``stages.png``."""
    import matplotlib

    out.mkdir(parents=True, exist_ok=True)
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    metric = "miou" if any(r["miou"] is not None for r in records) else "fidelity"
    colours = {label: f"C{k % 10}" for k, label in enumerate(dict.fromkeys(r["label"] for r in records))}
    paths = []

    # one line per configuration apart from the GOP and the swept values, which are written at each point
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = {}
    for r in records:
        series.setdefault(_series(r), []).append(r)
    for k, (name, rows) in enumerate(series.items()):
        rows.sort(key=lambda r: r["fps"])
        ax.plot([r["fps"] for r in rows], [r[metric] for r in rows], "o-", color=f"C{k % 10}", label=name)
        for r in rows:
            note = " ".join([f"g{r['gop']}", *(f"{v}" for v in r["swept"].values())])
            ax.annotate(note, (r["fps"], r[metric]), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("frames/s")
    ax.set_ylabel("mIoU %" if metric == "miou" else "fidelity mIoU % (against per-frame)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "accuracy_vs_speed.png"))

    # one panel per GOP, one line per configuration (per-frame has only distance 0: left out)
    gops = sorted({r["gop"] for r in records})
    fig, axes = plt.subplots(1, len(gops), figsize=(4 * len(gops) + 1, 4), sharey=True, squeeze=False)
    for ax, gop in zip(axes[0], gops):
        for r in records:
            curve = {int(d): v for d, v in r["miou_by_distance"].items() if v is not None}
            if r["gop"] == gop and len(curve) > 1:
                ax.plot(list(curve), list(curve.values()), "o-", ms=3, color=colours[r["label"]], label=r["label"])
        ax.set_title(f"GOP {gop}", fontsize=9)
        ax.set_xlabel("frames since the key frame")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mIoU %")
    if axes[0][-1].lines:
        axes[0][-1].legend(fontsize=7)
    paths.append(_save(fig, out / "accuracy_by_distance.png"))

    stages = sorted({k for r in records for k in r["stages_ms"]})
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.3 * len(records)))
    names = [f"{r['label']}, GOP {r['gop']}" for r in records]
    left = [0.0] * len(records)
    for stage in stages:
        widths = [r["stages_ms"].get(stage, 0.0) for r in records]
        ax.barh(names, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("ms per frame")
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=4)
    paths.append(_save(fig, out / "stages.png"))
    return paths


def _series(r: dict) -> str:
    """A record's label without its swept values: what varies along one line of the accuracy/speed plot."""
    swept = "".join(f", {k}={v}" for k, v in r["swept"].items())
    name = r["label"].replace(swept, "", 1)
    return name + (f" ({', '.join(r['swept'])})" if r["swept"] else "")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
