"""A stream served on this machine, as a camera would send it: for tests, benchmarks and trying
``taplab.stream`` without a camera.

``mpegts_bytes(frames)`` encodes RGB frames as MPEG-4 Part 2 (or H.264) in MPEG-TS;
``serve_tcp(data, seconds)`` serves it on 127.0.0.1 at real-time pace and returns the port, so that
``tcp://127.0.0.1:PORT`` reads it; ``send_udp(data, seconds)`` sends it as datagrams to a free port
that ``udp://127.0.0.1:PORT`` listens on; ``serve_http(data, seconds)`` answers one GET for
``http://127.0.0.1:PORT/live.ts`` the same way.
"""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np


def mpegts_bytes(frames: list[np.ndarray], fps: int = 25, gop: int = 12, codec: str = "mpeg4",
                 quality: int | None = None) -> bytes:
    """uint8 RGB frames (even sizes) -> an MPEG-TS byte string: I/P only, an I-frame every ``gop``
    frames, ``codec`` and ``quality`` as :func:`taplab.encode` takes them (the same encoder settings)."""
    import av

    from taplab.codec.encoder import CODECS

    spec = CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as container:
        stream = container.add_stream(spec.encoder, rate=fps, options=spec.options(gop, 0, quality or spec.default_quality))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = gop, 0
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode(None))
    return buf.getvalue()


def serve_tcp(data: bytes | list[bytes], seconds: float) -> int:
    """Serve ``data`` on 127.0.0.1 over TCP, spread over ``seconds`` (real-time pace), in a daemon thread;
    a list is served one item per connection (the sender disconnects after each and waits for the
    next connection). Returns the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    parts = data if isinstance(data, list) else [data]

    def send() -> None:
        with server:
            for part in parts:
                conn, _ = server.accept()
                with conn:
                    try:
                        _paced(part, seconds, conn.sendall)
                    except OSError:  # the reader went away
                        pass

    threading.Thread(target=send, name="taplab-loopback", daemon=True).start()
    return server.getsockname()[1]


def _paced(data: bytes, seconds: float, send) -> None:
    """Call ``send(chunk)`` for whole 7-packet TS chunks of ``data``, spread over ``seconds``."""
    start, step = time.perf_counter(), 188 * 7
    for i in range(0, len(data), step):
        wait = start + seconds * i / len(data) - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        send(data[i:i + step])


def send_udp(data: bytes, seconds: float, delay: float = 0.5) -> int:
    """Send ``data`` as UDP datagrams to a free port on 127.0.0.1, spread over ``seconds``, starting after
    ``delay`` seconds (time for the reader to listen), in a daemon thread. Returns the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def send() -> None:
        time.sleep(delay)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            _paced(data, seconds, lambda chunk: out.sendto(chunk, ("127.0.0.1", port)))

    threading.Thread(target=send, name="taplab-loopback", daemon=True).start()
    return port


def serve_http(data: bytes, seconds: float) -> int:
    """Answer one HTTP GET on 127.0.0.1 with ``data`` (``video/mp2t``, its length announced), spread over
    ``seconds``, in a daemon thread. Returns the port. (Without a length, FFmpeg reports the end of a
    stream as an I/O error: a live HTTP source that ends looks like one that broke.)"""
    import http.server
    import socketserver

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                _paced(data, seconds, self.wfile.write)
            except OSError:  # the reader went away
                pass

        def log_message(self, *args) -> None:  # quiet
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler)

    def answer() -> None:
        with server:
            server.handle_request()

    threading.Thread(target=answer, name="taplab-loopback", daemon=True).start()
    return server.server_address[1]
