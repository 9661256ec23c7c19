"""The ``taplab`` command line: thin click commands over the library.

Errors caused by input (every :class:`TapLabError`) print one line, ``error: ...``,
and exit with status 2; ``taplab --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import click

from taplab.errors import TapLabError, TapLabWarning


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW, e.g. 512x1024, got {text!r}") from None
    return h, w


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
@click.option("--codec", type=click.Choice(["mpeg4", "h264"]), default="mpeg4", show_default=True, help="mpeg4 is MPEG-4 Part 2, the papers' format.")
@click.option("--bframes", default=0, show_default=True, help="B-frames between anchors (0: I/P only).")
@click.option("--quality", type=int, default=None, help="mpeg4: quantiser 1-31 (default 4); h264: CRF 0-51 (default 23).")
@click.option("--fps", type=float, default=None, help="Frame rate (default: the source video's, else 25).")
def encode(source: str, out: Path, gop: int, codec: str, bframes: int, quality: int | None, fps: float | None) -> None:
    """Encode SOURCE (an image folder or a video) to OUT with a fixed GOP.

    For example a Cityscapes leftImg8bit_sequence city folder to MPEG-4 Part 2, GOP 12.
    """
    from taplab.codec import encode as run_encode

    path = run_encode(source, out, gop=gop, codec=codec, bframes=bframes, quality=quality, fps=fps)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--frames", default=30, show_default=True, help="Frames per clip.")
@click.option("--size", default="512x1024", show_default=True, help="Frame size HxW (even numbers).")
@click.option("--gop", default=12, show_default=True, help="Frames per GOP of the encoded clip.")
@click.option("--codec", type=click.Choice(["mpeg4", "h264"]), default="mpeg4", show_default=True)
@click.option("--bframes", default=0, show_default=True, help="B-frames between anchors.")
@click.option("--seed", default=0, show_default=True, help="Scene seed: the same seed gives the same clip.")
@click.option("--name", default="synth", show_default=True, help="Clip name used in file names.")
@click.option("--images", is_flag=True, help="Also write the uncompressed frames as PNGs.")
def synth(out: Path, frames: int, size: str, gop: int, codec: str, bframes: int, seed: int, name: str, images: bool) -> None:
    """Render a synthetic labelled street-scene clip into OUT.

    Writes the encoded video, per-frame label PNGs (Cityscapes train ids) and the
    ground-truth optical flow; see docs/synth.md for the layout.
    """
    from taplab.data.synth import SynthConfig, write_clip

    height, width = _parse_size(size)
    config = SynthConfig(height=height, width=width, frames=frames, seed=seed)
    with _progress(frames, "rendering") as update:
        path = write_clip(out, config, gop=gop, codec=codec, bframes=bframes, name=name, images=images, progress=lambda _t: update(1))
    click.echo(f"wrote {path}")


@cli.command()
def info() -> None:
    """Versions of taplab and its libraries, and which compiled kernels are active."""
    import av
    import cv2
    import numpy
    import torch

    from taplab import __version__
    from taplab.native import status

    try:
        from importlib.metadata import version

        mvx = version("motion-vector-extractor")
    except Exception:  # noqa: BLE001 - an optional package's metadata may be missing
        mvx = "not installed"
    ffmpeg = ".".join(str(v) for v in av.library_versions.get("libavcodec", ()))
    lines = [
        f"taplab        {__version__}",
        f"torch         {torch.__version__} (cuda: {'yes' if torch.cuda.is_available() else 'no'})",
        f"PyAV          {av.__version__} (libavcodec {ffmpeg})",
        f"mv-extractor  {mvx}",
        f"opencv        {cv2.__version__}",
        f"numpy         {numpy.__version__}",
        f"mc kernels    {status('mc').reason}",
    ]
    click.echo("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning input errors into one line and exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    warnings.simplefilter("default", TapLabWarning)
    if not debug:
        # One line per warning, no source line: these are messages for users.
        warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        cli.main(args=args, prog_name="taplab", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except TapLabError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
