"""The ``taplab`` command line: thin click commands over the library.

Errors caused by input (every :class:`TapLabError`) print one line, ``error: ...``,
and exit with status 2; ``taplab --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import json
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import click

from taplab.codec.reader import DEFAULT_TIMEOUT
from taplab.errors import TapLabError, TapLabWarning
from taplab.options import parse_assignments, parse_list, parse_range, parse_size, parse_value

_DEVICE_HELP = "cpu, cuda, cuda:N, or auto: the GPU where there is one."
#: the encoders of taplab.codec.encoder.CODECS (listed here so that --help starts without PyAV; a test checks them)
ENCODERS = ("mpeg4", "h264", "hevc", "vp9", "mpeg2")
#: the module combinations of `taplab bench` (taplab.bench.sweep.MODULES; listed here so that --help needs no torch)
MODULES_NAMES = ("per-frame", "FFW", "FFW+RGC", "FFW+RGFS", "FFW+RGC+RGFS", "FFW+fusion", "FFW+RGC+fusion",
                 "FFW+RGC+RGFS+fusion", "ITP")


@contextmanager
def _progress(total: int | None, label: str):
    """A progress bar on stderr; yields ``update(n)``."""
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="taplab")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """taplab: compressed-domain video semantic segmentation.

    Reads the motion vectors and residuals a video encoder already computed,
    to segment video many times faster than a CNN on every frame.
    """
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("video")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--backend", type=click.Choice(["pyav", "mvextractor"]), default="pyav", show_default=True, help="Decoder backend.")
def probe(video: str, as_json: bool, backend: str) -> None:
    """Show a video's codec, size, GOP pattern, vectors and residual per frame.

    VIDEO is a path or a URL (rtsp://, udp://, tcp://, http://).
    """
    from taplab.codec import probe as run_probe

    result = run_probe(video, backend=backend)
    click.echo(json.dumps(result.to_dict()) if as_json else result.format())


@cli.command()
@click.argument("source")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--gop", default=12, show_default=True, help="Frames per GOP (one I-frame, then P-frames).")
@click.option("--codec", type=click.Choice(ENCODERS), default="mpeg4", show_default=True,
              help="mpeg4 is MPEG-4 Part 2, the papers' format; hevc and vp9 export no motion vectors (docs/codec.md).")
@click.option("--bframes", default=0, show_default=True, help="B-frames between anchors (0: I/P only).")
@click.option("--quality", type=int, default=None, help="mpeg4/mpeg2: quantiser 1-31 (default 4); h264: CRF 0-51 (default "
                                                      "23); hevc: CRF 0-51 (default 28); vp9: CRF 0-63 (default 32).")
@click.option("--fps", type=float, default=None, help="Frame rate (default: the source video's, else 25).")
@click.option("--refs", default=1, show_default=True, help="h264/hevc: past reference frames a P-frame may use.")
def encode(source: str, out: Path, gop: int, codec: str, bframes: int, quality: int | None, fps: float | None,
           refs: int) -> None:
    """Encode SOURCE (an image folder or a video) to OUT with a fixed GOP.

    For example a Cityscapes leftImg8bit_sequence city folder to MPEG-4 Part 2, GOP 12.
    """
    from taplab.codec import encode as run_encode

    path = run_encode(source, out, gop=gop, codec=codec, bframes=bframes, quality=quality, fps=fps, refs=refs)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--frames", default=30, show_default=True, help="Frames per clip.")
@click.option("--size", default="512x1024", show_default=True, help="Frame size HxW (even numbers).")
@click.option("--gop", default=12, show_default=True, help="Frames per GOP of the encoded clip.")
@click.option("--codec", type=click.Choice(ENCODERS), default="mpeg4", show_default=True)
@click.option("--bframes", default=0, show_default=True, help="B-frames between anchors.")
@click.option("--seed", default=0, show_default=True, help="Scene seed: the same seed gives the same clip.")
@click.option("--name", default="synth", show_default=True, help="Clip name used in file names.")
@click.option("--images", is_flag=True, help="Also write the uncompressed frames as PNGs.")
@click.option("--clips", type=click.IntRange(min=1), default=1, show_default=True,
              help="Clips to render. More than one: NAME000, NAME001, ..., each with its own scene parameters, as "
                   "the training data synth:clips=N,seed=SEED has them (an encoded training set).")
def synth(out: Path, frames: int, size: str, gop: int, codec: str, bframes: int, seed: int, name: str, images: bool,
          clips: int) -> None:
    """Render a synthetic labelled street-scene clip into OUT.

    Writes the encoded video, per-frame label PNGs (Cityscapes train ids) and the
    ground-truth optical flow; see docs/synth.md for the layout.
    """
    from taplab.codec.encoder import check_encoding
    from taplab.data.datasets import SynthImages, SynthSet, clip_config
    from taplab.data.synth import SynthConfig, write_clip

    height, width = parse_size(size, "--size")
    if clips == 1:
        configs = {name: SynthConfig(height=height, width=width, frames=frames, seed=seed)}
    else:  # the training set's scenes: its seeds and its varied parameters (taplab.data.datasets.SynthImages)
        seeds = SynthImages(SynthSet(clips, frames, 1, seed, (height, width)), "train").seeds
        configs = {f"{name}{k:03d}": clip_config(s, (height, width), frames) for k, s in enumerate(seeds)}
    check_encoding(codec, gop, bframes)  # before the progress bar: a bad option is the only line printed
    with _progress(frames * clips, "rendering") as update:
        for clip, config in configs.items():
            path = write_clip(out, config, gop=gop, codec=codec, bframes=bframes, name=clip, images=images,
                              progress=lambda _t: update(1))
    click.echo(f"wrote {path}" if clips == 1 else f"wrote {clips} clips into {out}")


class _TrainBar:
    """One progress bar per epoch's training and validation phase, showing loss, throughput and lr.

    When stderr is not a terminal (a log file), a plain line every tenth of an epoch instead.
    """

    def __init__(self):
        self.bar, self.key, self.text = None, None, ""
        self.plain = not sys.stderr.isatty()

    def __call__(self, p) -> None:
        if self.plain:
            if p.phase == "train" and (p.step == p.steps or p.step % max(1, p.steps // 10) == 0):
                click.echo(f"epoch {p.epoch}/{p.epochs} step {p.step}/{p.steps}  loss {p.loss:.3f}  "
                           f"{p.images_per_s:.1f} img/s  lr {p.lr:.2e}", err=True)
            return
        key = (p.phase, p.epoch)
        if key != self.key:
            self.close()
            label = "preparing clips" if p.phase == "data" else \
                f"epoch {p.epoch}/{p.epochs} {'train' if p.phase == 'train' else 'val  '}"
            self.bar = click.progressbar(length=p.steps, label=label, file=sys.stderr, show_pos=True,
                                         item_show_func=lambda _: self.text).__enter__()
            self.key = key
        if p.phase == "train":
            self.text = f"loss {p.loss:.3f}  {p.images_per_s:.1f} img/s  lr {p.lr:.2e}"
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@cli.command()
@click.option("--model", default="bl2", show_default=True,
              help="Network to train: bl1, bl2 or bl3 (see `taplab models`), or conet: a correction network for --base.")
@click.option("--base", default="default", show_default=True,
              help="For --model conet: the segmentation model it corrects (name or checkpoint).")
@click.option("--gop", default=12, show_default=True, help="For --model conet: GOP of the encoded training clips.")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Network option, e.g. width=0.75 (repeatable).")
@click.option("--data", default="synth", show_default=True,
              help="Training data: synth[:clips=N,frames=N,step=N,seed=N,size=HxW], or a Cityscapes-, taplab-synth- or CamVid-format folder.")
@click.option("--val-data", default=None, help="Validation data (default: the val split of --data).")
@click.option("--out", default="runs/train", show_default=True, type=click.Path(file_okay=False), help="Folder for last.pt, best.pt, log.jsonl.")
@click.option("--epochs", default=20, show_default=True, help="Passes over the training set.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--iters-per-epoch", type=int, default=None, help="Batches per epoch (default: one pass over the data).")
@click.option("--crop", default="384x384", show_default=True, help="Random crop HxW.")
@click.option("--scale", default="0.5,2.0", show_default=True, help="Random scale range LOW,HIGH.")
@click.option("--no-flip", is_flag=True, help="No random horizontal flips.")
@click.option("--jpeg", default="40,95", show_default=True, help="JPEG re-encoding quality range LOW,HIGH (half the samples), or 'none'.")
@click.option("--jpeg-probability", default=0.5, show_default=True, help="Share of samples re-encoded as JPEG.")
@click.option("--lr", default=1e-3, show_default=True, help="Adam's initial learning rate.")
@click.option("--poly-power", default=0.9, show_default=True, help="Exponent of the poly schedule lr (1 - i/total)^p.")
@click.option("--weight-decay", default=0.0, show_default=True)
@click.option("--val-limit", type=click.IntRange(min=1), default=None, help="Validate on this many images only.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--init", default=None, metavar="MODEL",
              help="Start from this model's weights (a shipped model's name or a checkpoint of the same network): fine-tuning.")
@click.option("--temporal", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of PFI's temporal loss: predictions of consecutive frames agree along the motion "
                   "(synth:... data or frames decoded from video; 0: off). With --model conet: the consistency of "
                   "consecutive fused frames along the clips' true flow.")
@click.option("--distill", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of PFI's pairwise-frame distillation from --teacher (0: off).")
@click.option("--teacher", default=None, metavar="MODEL", help="The model --distill learns the frames' affinities from.")
@click.option("--temporal-data", multiple=True, metavar="VIDEO[@START:END]",
              help="Unlabelled video (e.g. your own footage) whose frames join the training data for the temporal "
                   "losses only (repeatable; frames START to END, END exclusive).")
@click.option("--resume", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Continue the run saved in this last.pt, in its folder, with its own settings "
                   "(only --epochs, --device and --threads may change).")
@click.pass_context
def train(ctx: click.Context, resume: str | None, **options) -> None:
    """Train a segmentation network (Adam, poly lr, random scale/crop/flip, cross-entropy).

    Validates mIoU after every epoch; writes OUT/last.pt, OUT/best.pt and OUT/log.jsonl.
    With --model conet, trains the correction network that fusion uses for the model --base, on
    encoded clips with labels on every frame (synth:... or a `taplab synth` folder).
    """
    from taplab.train import TrainConfig
    from taplab.train import train as run_train

    given = {name for name in options if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
    overrides = {}
    if resume is not None:
        allowed = {"epochs", "device", "threads"}
        if given - allowed:
            raise click.UsageError(f"--resume continues a run with its saved settings; only --epochs, --device and "
                                   f"--threads may be given (got --{sorted(given - allowed)[0].replace('_', '-')})")
        overrides = {name: options[name] for name in given}
        config = None
    else:
        jpeg = None if options["jpeg"].lower() == "none" else parse_range(options["jpeg"], int, "--jpeg")
        model_args = {k: parse_value(v) for k, v in parse_assignments(options["model_args"], "--model-arg").items()}
        config = TrainConfig(
            model=options["model"], model_args=model_args, base=options["base"],
            gop=options["gop"], data=options["data"],
            val_data=options["val_data"], out=options["out"], epochs=options["epochs"], batch_size=options["batch_size"],
            iters_per_epoch=options["iters_per_epoch"], crop=parse_size(options["crop"], "--crop"),
            scale=parse_range(options["scale"], float, "--scale"), flip=not options["no_flip"], jpeg=jpeg,
            jpeg_probability=options["jpeg_probability"], lr=options["lr"], poly_power=options["poly_power"],
            weight_decay=options["weight_decay"], val_limit=options["val_limit"], seed=options["seed"],
            device=options["device"], threads=options["threads"], init=options["init"],
            temporal=options["temporal"], distill=options["distill"], teacher=options["teacher"],
            temporal_data=options["temporal_data"])
    bar = _TrainBar()
    try:
        result = run_train(config, resume=resume, progress=bar, **overrides)
    finally:
        bar.close()
    for record in result.history:
        miou = "-" if record["val_miou"] is None else f"{100 * record['val_miou']:.1f}%"
        tc = "" if record.get("val_tc") is None else f"  val TC {100 * record['val_tc']:.1f}%"
        click.echo(f"epoch {record['epoch']:3d}  loss {record['loss']:.3f}  val mIoU {miou}{tc}")
    click.echo(f"best val mIoU {100 * result.best_miou:.1f}%: {result.best}")


@cli.command("eval")
@click.argument("model")
@click.argument("data")
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="val", show_default=True,
              help="Which part of DATA (folders without split sub-folders: every tenth clip is val).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N images only.")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def eval_(model: str, data: str, split: str, limit: int | None, device: str, as_json: bool) -> None:
    """Accuracy of MODEL on labelled DATA: per-class IoU, mIoU, pixel accuracy.

    MODEL: default, a shipped or built-in name, a checkpoint, a TorchScript file or package.module:factory.
    DATA: a Cityscapes-, taplab-synth- or CamVid-format folder, or synth[:...].
    """
    from taplab.data.datasets import open_dataset
    from taplab.evaluate import evaluate
    from taplab.nets.loader import load_model

    dataset = open_dataset(data, split)
    loaded = load_model(model, device=device)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    with _progress(n, "evaluating") as update:
        result = evaluate(loaded, dataset, limit=limit, progress=update)
    click.echo(json.dumps(result.to_dict()) if as_json else result.format())


@cli.command()
@click.argument("model")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="torch: a taplab checkpoint; onnx: an ONNX file for ONNX Runtime or any other runtime; "
                   "auto: onnx where OUT ends in .onnx, else torch.")
@click.option("--half/--full", default=True, show_default=True,
              help="Store a checkpoint's weights as float16 (half the size; torch format only).")
def export(model: str, out: str, fmt: str, half: bool) -> None:
    """Write MODEL to OUT, ready to ship or share.

    torch format: MODEL is a checkpoint, copied without its training state (architecture, weights,
    classes, training config and validation metrics kept). A correction network (from `taplab train
    --model conet`) ships as MODEL.conet.pt beside its model MODEL.pt.

    onnx format: MODEL is anything `taplab segment --model` takes; OUT takes float RGB in [0, 1] with
    dynamic height and width and gives logits, with the class names and palette in its metadata. It is
    checked against torch in ONNX Runtime before it is written.
    """
    from taplab.nets.checkpoint import export_checkpoint
    from taplab.nets.conet import export_correction
    from taplab.nets.loader import load_model
    from taplab.train_correction import is_correction_file

    fmt = fmt if fmt != "auto" else ("onnx" if out.lower().endswith(".onnx") else "torch")
    if fmt == "onnx":
        if Path(model).is_file() and is_correction_file(model):
            raise click.UsageError("a correction network runs inside taplab only; export it in torch format")
        path = load_model(model, device="cpu", engine="torch").export_onnx(out)
    elif not Path(model).is_file():
        raise click.BadParameter(f"{model} is not a file (torch format copies a checkpoint)", param_hint="MODEL")
    else:
        path = (export_correction(model, out, half=half) if is_correction_file(model)
                else export_checkpoint(model, out, half=half))
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@cli.command()
def models() -> None:
    """List the built-in networks and the trained models shipped with taplab."""
    from taplab.nets.zoo import describe_models

    click.echo(describe_models())


class _SegmentProgress:
    """Progress of a run on stderr: a bar with the frames done, frames/s, the share of key frames and an ETA
    where the number of frames is known (a file), else a status line (a live source).

    When stderr is not a terminal (a log file), a plain line every 50 frames instead.
    """

    def __init__(self, label: str = "segmenting"):
        self.label, self.tty, self.text, self.bar = label, sys.stderr.isatty(), "", None

    def __call__(self, result, summary) -> None:
        rate = f"{summary.fps:.1f} frames/s  key frames {100 * summary.key_share:.0f}%"
        if self.tty and summary.total:
            if self.bar is None:
                self.bar = click.progressbar(length=summary.total, label=self.label, file=sys.stderr, show_pos=True,
                                             show_eta=True, item_show_func=lambda _: self.text).__enter__()
            self.text = rate
            self.bar.update(1)
            return
        of = f"/{summary.total}" if summary.total else ""
        left = summary.total - summary.frames if summary.total else 0
        eta = f"  ETA {left / summary.fps:.0f} s" if left > 0 and summary.fps else ""
        self.text = f"{self.label}: {summary.frames}{of} frames  {rate}{eta}"
        if self.tty:
            click.echo("\r" + self.text, err=True, nl=False)
        elif summary.frames % 50 == 0:
            click.echo(self.text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        elif self.tty and self.text:
            click.echo("", err=True)


class _PhaseProgress:
    """One progress bar per phase of a job (``progress(phase, done, total)``), each closed when the next begins."""

    def __init__(self):
        self.phase, self.bar = None, None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = click.progressbar(length=total, label=phase, file=sys.stderr, show_pos=True).__enter__()
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


class _GeneratedCommand(click.Command):
    """A command with one option per field of a config dataclass, generated from the dataclass (name, type, choices,
    default, help) when first needed: to parse a command line or show --help. So the API and the CLI cannot
    drift apart, and the other commands start without importing torch. Subclasses name the generator and the
    option after which the generated ones go."""

    after: str
    generate: staticmethod

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._generated = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._generated:
            self._generated = True
            at = next(i for i, p in enumerate(self.params) if p.name == self.after) + 1
            self.params[at:at] = self.generate()
        return super().get_params(ctx)


class _ConfigCommand(_GeneratedCommand):
    """``taplab segment``: one option per :class:`~taplab.runtime.RuntimeConfig` field."""

    after = "config_file"
    generate = staticmethod(lambda: _runtime_options())


def _runtime_options() -> list[click.Option]:
    """The options of every RuntimeConfig field. Each defaults to None, "not given", so that a --config file's
    values hold where no flag overrides them; the help shows the dataclass's default."""
    from taplab.runtime import RuntimeConfig

    options = []
    for name in RuntimeConfig.field_names():
        info = RuntimeConfig.describe(name)
        default = {True: "on", False: "off"}.get(info.default, info.default)
        shown = f"{default:.3g}" if isinstance(default, float) else default
        text = info.help if "default:" in info.help else f"{info.help}  [default: {shown}]"  # else it says itself
        if info.value_type is bool:
            options.append(click.Option([f"{info.flag}/--no-{info.flag[2:]}", name], default=None, help=text))
        else:
            options.append(click.Option([info.flag, name], type=_FieldValue(info), default=None, help=text))
    return options


#: what ``--field none`` gives: the field set to None over a --config file (None itself means "not given")
_UNSET = object()


class _FieldValue(click.ParamType):
    """A RuntimeConfig field's value from its text, read by ``RuntimeConfig.parse`` as ``bench --set`` reads it
    (``none`` unsets an optional field over a --config file); the choices the command line can use."""

    def __init__(self, info):
        self.info = info
        self.choices = tuple(c for c in info.choices if c not in info.api_only) if info.choices else None
        self.name = info.value_type.__name__

    def get_metavar(self, param, ctx=None) -> str:
        if self.choices:
            return f"[{'|'.join(self.choices)}]"
        return "FILE" if self.info.path else self.name.upper()

    def convert(self, value, param, ctx):
        from taplab.runtime import RuntimeConfig

        if not isinstance(value, str):
            return value
        if self.choices and value not in self.choices:
            self.fail(f"{value!r} is not one of {', '.join(self.choices)}", param, ctx)
        try:
            parsed = RuntimeConfig.parse(self.info.name, value)
        except TapLabError as exc:
            self.fail(str(exc), param, ctx)
        if self.info.path and parsed is not None and not Path(parsed).is_file():
            self.fail(f"no such file: {parsed}", param, ctx)
        return _UNSET if parsed is None else parsed


class _AdaptCommand(_GeneratedCommand):
    """``taplab adapt``: one option per :class:`~taplab.adapt.AdaptConfig` field."""

    after = "out"
    generate = staticmethod(lambda: _adapt_options())


def _adapt_options() -> list[click.Option]:
    import dataclasses
    import typing

    from taplab.adapt import AdaptConfig

    hints = typing.get_type_hints(AdaptConfig)
    found = []
    for f in dataclasses.fields(AdaptConfig):
        value_type = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        if value_type is bool:
            found.append(click.Option([f"{flag}/--no-{flag[2:]}"], default=f.default, show_default=True,
                                      help=f.metadata["help"]))
        else:
            choices = f.metadata.get("choices")
            found.append(click.Option([flag], type=click.Choice(choices) if choices else value_type, default=f.default,
                                      show_default=f.default is not None, help=f.metadata["help"]))
    return found


@cli.command(cls=_AdaptCommand)
@click.argument("model")
@click.argument("videos", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the adapted model (created; use it as --model).")
@click.option("--device", default="cpu", show_default=True,
              help="Where the model (the teacher) runs: " + _DEVICE_HELP + " The correction trains on the CPU.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def adapt(model: str, videos: tuple[str, ...], out: Path, device: str, overwrite: bool, **settings) -> None:
    """Adapt the correction to MODEL on VIDEOS (your own footage, no labels needed) and write it to --out.

    MODEL runs on every frame as the teacher; a correction network learns to bring the warped frames
    closer to it. Held-out frames (the end of each video) decide whether it is switched on. Use the
    result as `taplab segment VIDEO --model OUT`; OUT/report.md says what it gained and costs.
    """
    from taplab.adapt import AdaptConfig
    from taplab.adapt import adapt as run_adapt

    progress = _PhaseProgress()
    try:
        result = run_adapt(model, videos, out, AdaptConfig(**settings), device=device, overwrite=overwrite,
                           progress=progress)
    finally:
        progress.close()
    click.echo(result.format())
    click.echo(f"wrote {out}")


@cli.command(cls=_ConfigCommand)
@click.argument("videos", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder (created).")
@click.option("--model", default="default", show_default=True,
              help="default, a shipped or built-in name, a checkpoint, a TorchScript file or package.module:factory.")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A JSON file of runtime options (see docs/runtime.md); flags given here override it.")
@click.option("--format", "formats", multiple=True, type=click.Choice(["labels", "color", "npz"]), default=("labels",),
              show_default=True, help="Per-frame outputs, repeatable: labels (frame_*.png, label ids), color (color/), "
                                      "npz (npz/). Only those asked are written.")
@click.option("--overlay", type=click.Path(dir_okay=False), default=None,
              help="Also write an H.264 video of the frames blended with their masks and a class legend, e.g. "
                   "overlay.mp4 (several videos: a file name, written in each video's folder).")
@click.option("--side-by-side", is_flag=True, help="In the overlay video, put the mask next to the frame instead.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N frames (of each video).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out, replacing an earlier run's files "
                                                "(several videos: redo the ones complete already too).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Several videos: worker processes (with --ray: Ray actors), the CPU threads shared among them "
                   "[default: one per CPU, at most one per video; docs/scale.md].")
@click.option("--ray", "ray", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Several videos: run them on Ray (pip install -e '.[ray]'): the cluster at ADDRESS, else the one "
                   "RAY_ADDRESS names, else a local Ray. Outputs go to --out, which the cluster must share.")
@click.option("--live", is_flag=True, help="Pace a file at its frame rate, as a camera delivers frames (with "
                                          "--latency-budget: see how the runtime keeps up).")
@click.option("--follow", is_flag=True, help="VIDEO is a file still being written (MPEG-TS or raw MPEG-4/H.264): "
                                            "read it as it grows, until it has not grown for --timeout seconds.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds a stream may take to open or go without data (and a followed file without growing).")
@click.option("--source-option", "source_options", multiple=True, metavar="KEY=VALUE",
              help="An FFmpeg option for the source, e.g. rtsp_transport=udp (RTSP defaults to tcp; repeatable).")
@click.option("--reconnect", is_flag=True, help="For a stream URL: reopen it when it ends, disconnects or fails "
                                               "(after 0.5 s, doubling to 8 s), until --limit or Ctrl-C.")
@click.pass_context
def segment(ctx: click.Context, videos: tuple[str, ...], out: Path, model: str, device: str, config_file: str | None,
            formats: tuple[str, ...], overlay: str | None, side_by_side: bool, limit: int | None, overwrite: bool,
            workers: int | None, ray: str | None, live: bool, follow: bool, timeout: float,
            source_options: tuple[str, ...], reconnect: bool, **options) -> None:
    """Segment VIDEOS frame by frame into --out: label-id PNGs (frame_000000.png ...), frames.json/.csv.

    A VIDEO is a path, a URL (rtsp://, udp://, tcp://, http://...: until the stream ends or Ctrl-C) or -
    (standard input, e.g. piped from ffmpeg in MPEG-TS). Key frames (I-frames, and P-frames whose
    residual is large) run the CNN; the other frames are warped with the codec's motion vectors,
    fused with a light correction network where warping failed, and corrected by the CNN in the
    region with the most residual. Every runtime option below is a field of taplab.RuntimeConfig.

    Several videos, a folder (its videos, recursively), a quoted glob ('clips/**/*.mp4') or a list file
    (.txt: a path or URL per line) make a batch: each video's outputs go to --out/NAME/, a table and
    --out/summary.json say how each went, videos complete already are skipped, and the exit status is 3
    where any failed (docs/scale.md).
    """
    from taplab.batch import is_batch
    from taplab.runtime import RuntimeConfig

    config = RuntimeConfig.from_file(config_file) if config_file else RuntimeConfig.for_model(model)
    config = config.replace(**{k: None if v is _UNSET else v for k, v in options.items() if v is not None})
    if is_batch(videos):
        single = {"--live": live, "--follow": follow, "--reconnect": reconnect, "--source-option": source_options,
                  "--timeout": ctx.get_parameter_source("timeout") is not click.core.ParameterSource.DEFAULT}
        given = [flag for flag, value in single.items() if value]
        if given:
            raise click.UsageError(f"{given[0]} is for one video or stream, not a batch")
        _segment_batch(videos, out, model, device, config, formats, overlay, side_by_side, limit, overwrite, workers,
                       ray)
        return
    if workers is not None or ray is not None:
        raise click.UsageError(f"--{'ray' if ray is not None else 'workers'} is for several videos; for one video, "
                               "--threads sets the CPU threads it uses")
    from taplab.pipeline import segment as run_segment

    (video,) = videos
    progress = _SegmentProgress()
    try:
        summary = run_segment(click.get_binary_stream("stdin") if video == "-" else video, out, model,
                              formats=formats, overlay=overlay, side_by_side=side_by_side, overwrite=overwrite,
                              limit=limit, live=live, reconnect=reconnect, follow=follow, timeout=timeout,
                              source_options=parse_assignments(source_options, "--source-option"), device=device,
                              config=config, progress=progress)
    finally:
        progress.close()
    click.echo(summary.format())
    skipped = summary.skipped
    click.echo(f"wrote {summary.frames - skipped} frames to {out}" + (f" ({skipped} skipped)" if skipped else ""))


#: the exit status of a batch in which some videos failed (the others' outputs stand; 2 stays "the command was wrong")
BATCH_FAILED = 3


def _segment_batch(videos, out: Path, model: str, device: str, config, formats, overlay, side_by_side: bool,
                   limit: int | None, overwrite: bool, workers: int | None, ray: str | None) -> None:
    from taplab.batch import segment_many

    progress = _BatchProgress()
    try:
        batch = segment_many(videos, out, model, workers=workers, ray=ray, overwrite=overwrite, formats=formats,
                             overlay=overlay, side_by_side=side_by_side, limit=limit, device=device, config=config,
                             progress=progress)
    finally:
        progress.close()
    click.echo(batch.format())
    click.echo(f"summary: {out / 'summary.json'}")
    if batch.failed:
        sys.exit(BATCH_FAILED)


class _BatchProgress:
    """Progress of a batch on stderr: a bar over the videos with the frames done, frames/s and failures; when
    stderr is not a terminal, one line per video that ends."""

    def __init__(self):
        self.tty, self.bar, self.text = sys.stderr.isatty(), None, ""

    def __call__(self, state) -> None:
        rate = f"{state.frames / state.seconds:.1f} frames/s" if state.seconds else ""
        failed = f", {state.failed} failed" if state.failed else ""
        self.text = f"{state.frames} frames, {rate}{failed}"
        if not self.tty:
            if state.record is not None:
                r = state.record
                what = r.status + (f": {r.error}" if r.error else f", {r.frames} frames")
                click.echo(f"[{state.videos}/{state.total}] {r.name}: {what}", err=True)
            return
        if self.bar is None:
            self.bar = click.progressbar(length=state.total, label="videos", file=sys.stderr, show_pos=True,
                                         show_eta=True, item_show_func=lambda _: self.text).__enter__()
        if state.record is not None:
            self.bar.update(1)
        else:
            self.bar.render_progress()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@cli.command()
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the clip, the masks and the overlay video (created).")
@click.option("--frames", default=48, show_default=True, type=click.IntRange(min=2), help="Frames of the clip.")
@click.option("--size", default="512x1024", show_default=True, help="Frame size HxW (even numbers).")
@click.option("--seed", default=700001, show_default=True,
              help="Scene seed: the same seed gives the same clip and figures (700001: a scene the shipped model never saw).")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out, replacing an earlier demo's files.")
def demo(out: Path, frames: int, size: str, seed: int, device: str, overwrite: bool) -> None:
    """Segment a synthetic street clip that taplab makes itself: nothing but the install is needed.

    Renders a labelled clip (MPEG-4 Part 2, GOP 12) into OUT/clip, segments it with the shipped
    model into OUT/masks (label and colour PNGs, frames.json/.csv) and OUT/overlay.mp4, runs the model
    on every frame beside it, and prints the speed-up and the accuracy of both against the labels.
    """
    from taplab.demo import run_demo

    progress = _PhaseProgress()
    try:
        result = run_demo(out, frames, parse_size(size, "--size"), seed, device=device, overwrite=overwrite,
                          progress=progress)
    finally:
        progress.close()
    click.echo(result.format())


@cli.command()
@click.option("--data", default=None,
              help="synth:clips=N,frames=N,size=HxW (labelled synthetic clips; default synth:clips=2,frames=30,"
                   "size=512x1024), a video (fidelity and TC only), or a Cityscapes sequence folder (the papers' "
                   "protocol: the 20th frame of each snippet scored).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.csv/.md/.json and the plots.")
@click.option("--gop", "gops", default=None, help="GOPs to encode the data with, e.g. 6,12,24 [12].")
@click.option("--modules", default=None, help=f"Comma-separated module combinations [all]: {', '.join(MODULES_NAMES)}.")
@click.option("--motion", default=None,
              help="Motion sources: codec, dis-ultrafast, dis-fast, dis-medium, farneback, truth, auto [auto]; truth "
                   "(ground-truth flow) needs synthetic data.")
@click.option("--set", "sweeps", multiple=True, metavar="FIELD=V1,V2",
              help="Sweep a runtime option (any `taplab segment` option, as its field name), e.g. rgc_alpha=0.5,0.8 "
                   "or rgfs_threshold=3,6,12 (repeatable).")
@click.option("--model", "models", default="default", show_default=True,
              help="Segmentation models, comma-separated (names or checkpoints).")
@click.option("--scale", "scales", default="1", show_default=True,
              help="Resolution factors, comma-separated, e.g. 0.5,1: the data is resized before encoding.")
@click.option("--frames", default=60, show_default=True, help="For a video: how many of its frames.")
@click.option("--key-distance", type=int, default=None,
              help="For a Cityscapes sequence folder: frames from the key frame to the annotated 20th frame "
                   "[drawn per snippet].")
@click.option("--codec", type=click.Choice(ENCODERS), default="mpeg4", show_default=True,
              help="The encoder of the sweep's clips; hevc and vp9 are warped with estimated vectors (--motion auto).")
@click.option("--quick", is_flag=True, help="A small sweep that finishes in well under a minute (GOP 6 and 12, four "
                                            "module combinations, two short synthetic clips).")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
def bench(data: str | None, out: Path, gops: str | None, modules: str | None, motion: str | None,
          sweeps: tuple[str, ...], models: str, scales: str, frames: int, key_distance: int | None, codec: str,
          quick: bool, device: str) -> None:
    """Sweep GOPs, module combinations, motion sources and thresholds: accuracy against speed.

    Writes OUT/results.csv, results.md, results.json (machine, versions, configuration) and
    accuracy_vs_speed.png, accuracy_by_distance.png, stages.png.
    """
    from taplab.bench import BenchConfig, run_sweep, write_report

    defaults = (dict(data="synth:clips=2,frames=25,size=256x512", gops=(6, 12),
                     modules=("per-frame", "FFW", "FFW+RGC+RGFS", "FFW+RGC+RGFS+fusion")) if quick else {})
    from taplab.runtime import RuntimeConfig

    options = dict(defaults)
    if data is not None:
        options["data"] = data
    if gops is not None:
        options["gops"] = tuple(parse_list(gops, int, "--gop"))
    if modules is not None:
        options["modules"] = tuple(parse_list(modules, str, "--modules"))
    if motion is not None:
        options["motion"] = tuple(parse_list(motion, str, "--motion"))
    # --set values are read with their field's type, as `segment`'s options are
    sweep = {name: [RuntimeConfig.parse(name, v) for v in parse_list(values, str, "--set")]
             for name, values in parse_assignments(sweeps, "--set", "FIELD=V1,V2").items()}
    config = BenchConfig(**options, sweep=sweep, models=tuple(parse_list(models, str, "--model")),
                         scales=tuple(parse_list(scales, float, "--scale")), frames=frames, key_distance=key_distance,
                         codec=codec, device=device)
    points = config.points()
    with _progress(len(points), "bench") as update:
        records = run_sweep(config, progress=lambda done, total, point: update(1))
    paths = write_report(out, config, records)
    click.echo((out / "results.md").read_text())
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@cli.command()
def info() -> None:
    """Versions of taplab and its libraries, and which compiled kernels are active."""
    import av
    import cv2
    import numpy
    import torch

    import taplab.ops.warp  # noqa: F401 - hands the CUDA kernel the reference its self-test compares with
    from taplab import __version__
    from taplab.native import status
    from taplab.nets.engines import engine_lines
    from taplab.threads import current_plan

    def installed(package: str, missing: str = "not installed") -> str:
        from importlib.metadata import version

        try:
            return version(package)
        except Exception:  # noqa: BLE001 - an optional package's metadata may be missing
            return missing

    mvx = installed("motion-vector-extractor")
    ray = installed("ray", "not installed (for --ray: pip install -e '.[ray]')")
    ffmpeg = ".".join(str(v) for v in av.library_versions.get("libavcodec", ()))
    lines = [
        f"taplab        {__version__}",
        f"torch         {torch.__version__} (cuda: {'yes' if torch.cuda.is_available() else 'no'})",
        f"PyAV          {av.__version__} (libavcodec {ffmpeg})",
        f"mv-extractor  {mvx}",
        f"ray           {ray}",
        f"opencv        {cv2.__version__}",
        f"numpy         {numpy.__version__}",
        f"mc kernels    {status('mc').reason}",
        f"labels kernel {status('labels').reason}",
        f"warp kernel   {status('warp').reason}",
        f"cuda warp     {status('warp_cuda').reason}",
        f"devices       {_devices(torch)}",
        *engine_lines(),
        f"threads       {current_plan().describe()}",
        f"default model {_default_model()}",
        f"correction    {_default_correction()}",
    ]
    click.echo("\n".join(lines))


def _default_model() -> str:
    from taplab.nets.zoo import DEFAULT_MODEL, find_shipped

    shipped = find_shipped("default")
    return f"{DEFAULT_MODEL} ({shipped.path})" if shipped else f"{DEFAULT_MODEL} not installed (models/ missing)"


def _devices(torch) -> str:
    names = [f"cpu ({torch.get_num_threads()} threads)"]
    names += [f"cuda:{k} {torch.cuda.get_device_name(k)}" for k in range(torch.cuda.device_count())]
    return ", ".join(names)


def _default_correction() -> str:
    from taplab.nets.zoo import find_correction

    path, tamed = find_correction("default"), find_correction("default", "twnet")
    found = f"{path} (fusion on by default)" if path else "none for the default model (fusion off)"
    return found + (f"; TWNet's: {tamed} (--correction-kind twnet)" if tamed else "")


#: storage failures that any command writing files can meet (a full disk or quota, a read-only file system): one line,
#: as segment's OutputError says them, wherever a command did not turn them into a TapLabError of its own
_STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning input errors into one line and exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    warnings.simplefilter("default", TapLabWarning)
    if not debug:
        # One line per warning, no source line: these are messages for users.
        warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    saved = _stop_on_signals()
    try:
        cli.main(args=args, prog_name="taplab", standalone_mode=False)
    except click.exceptions.Abort as exc:
        terminated = isinstance(exc.__cause__, Terminated)
        click.echo("error: terminated" if terminated else "error: interrupted", err=True)
        sys.exit(143 if terminated else 130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except TapLabError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        if debug or exc.errno not in _STORAGE_ERRORS:  # anything else is a bug, whose traceback helps
            raise
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"error: cannot write: {exc.strerror or exc}{where}", err=True)
        sys.exit(2)
    except Terminated:
        click.echo("error: terminated", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    finally:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # no stop signal came: hand them back
            for signum, handler in saved.items():
                signal.signal(signum, handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM, which ends a command as Ctrl-C does: the frame in hand finished, the logs and overlay written."""


def _stop_on_signals() -> dict:
    """SIGINT and SIGTERM end the command through the same path, once: the first raises in the main thread, and
    later ones are ignored while the outputs are closed and the process exits, so that a second Ctrl-C cannot
    cut the log short. Returns the handlers replaced, which :func:`main` hands back when no signal came (none
    outside the main thread, where Python cannot install any)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        files = sys.modules.get("taplab.files")  # not imported yet: nothing is being written
        if files is None or not files.defer_stop(exc):  # else raised once the frame being written is whole
            raise exc

    return {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}


if __name__ == "__main__":
    main()
