"""A stream served on this machine, as a camera would send it: for tests, benchmarks and trying
``taplab.stream`` without a camera.

``mpegts_clip(frames)`` encodes RGB frames as MPEG-4 Part 2 (or H.264) in MPEG-TS, remembering where
each frame's packets end. Every server below sends each frame's packets at that frame's time (frame
``i`` at ``i / fps`` seconds after the start), in a daemon thread, and returns the port to read from:

- ``serve_tcp(clip)``: ``tcp://127.0.0.1:PORT``;
- ``send_udp(clip)``: datagrams to a free port that ``udp://127.0.0.1:PORT`` listens on;
- ``serve_http(clip)``: one GET of ``http://127.0.0.1:PORT/live.ts``;
- ``serve_rtsp(clip)``: ``rtsp://127.0.0.1:PORT/live``, a minimal RTSP server (RFC 2326: OPTIONS,
  DESCRIBE, SETUP, PLAY, TEARDOWN) sending the MPEG-TS as RTP payload type 33 (RFC 2250), over the
  RTSP connection (``rtsp_transport=tcp``, interleaved) or as UDP datagrams, as the client asks.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TS_PACKET = 188
CHUNK = 7 * TS_PACKET  # TS packets per datagram or RTP packet: 1316 bytes, within an Ethernet MTU


@dataclass(frozen=True)
class TsClip:
    """An MPEG-TS byte string and the offset at which each frame's packets end, for pacing."""

    data: bytes
    frame_ends: tuple[int, ...]
    fps: float

    @property
    def seconds(self) -> float:
        return len(self.frame_ends) / self.fps

    def frames(self) -> list[bytes]:
        """Each frame's bytes (the muxer's trailing packets go with the last frame)."""
        starts = (0, *self.frame_ends[:-1])
        ends = (*self.frame_ends[:-1], len(self.data))
        return [self.data[a:b] for a, b in zip(starts, ends)]


def mpegts_clip(frames: list[np.ndarray], fps: int = 25, gop: int = 12, codec: str = "mpeg4",
                quality: int | None = None) -> TsClip:
    """uint8 RGB frames (even sizes) -> a :class:`TsClip`: I/P only, an I-frame every ``gop`` frames,
    ``codec`` and ``quality`` as :func:`taplab.encode` takes them (the same encoder settings)."""
    import av

    from taplab.codec.encoder import CODECS

    spec = CODECS[codec]
    buf, ends = io.BytesIO(), []
    with av.open(buf, "w", format="mpegts") as container:
        stream = container.add_stream(spec.encoder, rate=fps, options=spec.options(gop, 0, quality or spec.default_quality, 1))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = gop, 0
        # without B-frames packets come in display order, one per frame (the encoder may lag behind)
        for image in [*frames, None]:
            packets = stream.encode(None if image is None else
                                    av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))
            for packet in packets:
                container.mux(packet)
                ends.append(buf.tell())
    return TsClip(buf.getvalue(), tuple(ends), fps)


def _paced(clip: TsClip, send: Callable[[bytes, int], None], stop: threading.Event | None = None) -> None:
    """Call ``send(chunk, frame)`` for the chunks of each frame at the frame's time (each frame's bytes as
    a burst, as an encoder emits them), until done or ``stop`` is set."""
    start = time.perf_counter()
    for i, data in enumerate(clip.frames()):
        wait = start + i / clip.fps - time.perf_counter()
        if stop is not None and stop.wait(max(0.0, wait)):
            return
        if stop is None and wait > 0:
            time.sleep(wait)
        for j in range(0, len(data), CHUNK):
            send(data[j:j + CHUNK], i)


def _listen() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server


def _serve(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="taplab-loopback", daemon=True).start()


def serve_tcp(clips: TsClip | list[TsClip]) -> int:
    """Serve a clip over TCP; a list, one clip per connection (the sender disconnects after each and
    waits for the next connection). Returns the port."""
    server = _listen()

    def send() -> None:
        with server:
            for clip in clips if isinstance(clips, list) else [clips]:
                conn, _ = server.accept()
                with conn:
                    try:
                        _paced(clip, lambda chunk, _: conn.sendall(chunk))
                    except OSError:  # the reader went away
                        pass

    _serve(send)
    return server.getsockname()[1]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def send_udp(clip: TsClip, delay: float = 0.5) -> int:
    """Send a clip as UDP datagrams to a free port on 127.0.0.1, starting after ``delay`` seconds (time for
    the reader to listen). Returns the port."""
    port = _free_udp_port()

    def send() -> None:
        time.sleep(delay)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            _paced(clip, lambda chunk, _: out.sendto(chunk, ("127.0.0.1", port)))

    _serve(send)
    return port


def serve_http(clip: TsClip) -> int:
    """Answer one HTTP GET with a clip (``video/mp2t``, its length announced). Returns the port.
    (Without a length, FFmpeg reports the end of a stream as an I/O error: a live HTTP source that
    ends looks like one that broke.)"""
    import http.server
    import socketserver

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Content-Length", str(len(clip.data)))
            self.end_headers()
            try:
                _paced(clip, lambda chunk, _: self.wfile.write(chunk))
            except OSError:  # the reader went away
                pass

        def log_message(self, *args) -> None:  # quiet
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler)

    def answer() -> None:
        with server:
            server.handle_request()

    _serve(answer)
    return server.server_address[1]


# -- RTSP ------------------------------------------------------------------------------------------

_SDP = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=taplab loopback
c=IN IP4 127.0.0.1
t=0 0
a=control:*
m=video 0 RTP/AVP 33
a=rtpmap:33 MP2T/90000
a=control:track0
"""
_SSRC = 0x7A91AB00
BYE_DELAY = 0.25  # seconds between the last packet and the RTCP BYE


def _rtp(payload: bytes, seq: int, timestamp: int) -> bytes:
    """An RTP packet (RFC 3550): version 2, payload type 33 (MPEG-TS, RFC 2250)."""
    return bytes([0x80, 33]) + (seq & 0xFFFF).to_bytes(2, "big") + (timestamp & 0xFFFFFFFF).to_bytes(4, "big") \
        + _SSRC.to_bytes(4, "big") + payload


def _rtcp_bye() -> bytes:
    """An RTCP BYE (RFC 3550 6.6): the sender is done; FFmpeg ends the stream when it sees one. With a
    reason ("end"), so that it is 12 bytes: FFmpeg drops shorter packets before it looks for RTCP."""
    return bytes([0x81, 203, 0, 2]) + _SSRC.to_bytes(4, "big") + bytes([3]) + b"end"


class _RtspSession:
    """One client's RTSP connection: requests are answered in order; PLAY starts the paced RTP sender."""

    def __init__(self, conn: socket.socket, clip: TsClip, port: int):
        self.conn, self.clip, self.port = conn, clip, port
        self.lock = threading.Lock()  # responses and interleaved RTP share the connection
        self.stop = threading.Event()
        self.udp: tuple[socket.socket, socket.socket, int] | None = None  # RTP and RTCP sockets, client port
        self.sender: threading.Thread | None = None

    def run(self) -> None:
        reader = self.conn.makefile("rb")
        try:
            while not self.stop.is_set():
                request = self._read_request(reader)
                if request is None:
                    return
                self._answer(*request)
        except OSError:
            return
        finally:
            self.stop.set()
            if self.sender is not None:
                self.sender.join(5)
            if self.udp is not None:
                self.udp[0].close()
                self.udp[1].close()
            self.conn.close()

    @staticmethod
    def _read_request(reader) -> tuple[str, dict[str, str]] | None:
        line = reader.readline()
        while line in (b"\r\n", b"\n"):
            line = reader.readline()
        if not line:
            return None
        method = line.decode("latin-1").split(" ", 1)[0]
        headers = {}
        for raw in iter(reader.readline, b""):
            text = raw.decode("latin-1").strip()
            if not text:
                break
            name, _, value = text.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            reader.read(int(headers["content-length"]))
        return method, headers

    def _reply(self, headers: dict[str, str], extra: dict[str, str] | None = None, body: str = "",
               status: str = "200 OK") -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {headers.get('cseq', '0')}", "Session: 7A91AB00;timeout=60"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        with self.lock:
            self.conn.sendall(("\r\n".join(lines) + "\r\n\r\n" + body).encode("latin-1"))

    def _answer(self, method: str, headers: dict[str, str]) -> None:
        if method == "OPTIONS":
            self._reply(headers, {"Public": "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"})
        elif method == "DESCRIBE":
            self._reply(headers, {"Content-Type": "application/sdp",
                                  "Content-Base": f"rtsp://127.0.0.1:{self.port}/live/"}, _SDP.replace("\n", "\r\n"))
        elif method == "SETUP":
            self._reply(headers, {"Transport": self._setup(headers.get("transport", ""))})
        elif method == "PLAY":
            self._reply(headers, {"Range": "npt=0.000-"})
            self.sender = threading.Thread(target=self._send, name="taplab-loopback-rtp", daemon=True)
            self.sender.start()
        elif method == "TEARDOWN":
            self._reply(headers)
            self.stop.set()
        elif method == "GET_PARAMETER":  # a keep-alive
            self._reply(headers)
        else:
            self._reply(headers, status="405 Method Not Allowed")

    def _setup(self, transport: str) -> str:
        """The transport the client asked for: interleaved in this connection, or UDP to its ports."""
        if "TCP" in transport.upper():
            return "RTP/AVP/TCP;unicast;interleaved=0-1"
        params = dict(p.partition("=")[::2] for p in transport.split(";"))
        client = int(params["client_port"].split("-")[0])
        rtp, rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtcp.bind(("127.0.0.1", 0))  # the client's receiver reports land here, unread
        self.udp = (rtp, rtcp, client)
        return (f"RTP/AVP/UDP;unicast;client_port={client}-{client + 1};"
                f"server_port={rtp.getsockname()[1]}-{rtcp.getsockname()[1]}")

    def _send(self) -> None:
        seq = 0

        def packet(chunk: bytes, frame: int) -> None:
            nonlocal seq
            data = _rtp(chunk, seq, round(frame * 90000 / self.clip.fps))
            seq += 1
            self._deliver(data, channel=0)

        try:
            _paced(self.clip, packet, self.stop)
            # a little later: over UDP, RTCP has its own socket and could overtake the last packets
            if not self.stop.wait(BYE_DELAY):
                self._deliver(_rtcp_bye(), channel=1)
        except OSError:  # the client went away
            self.stop.set()

    def _deliver(self, data: bytes, channel: int) -> None:
        if self.udp is None:  # interleaved (RFC 2326 10.12): '$', channel, length, packet
            with self.lock:
                self.conn.sendall(b"$" + bytes([channel]) + len(data).to_bytes(2, "big") + data)
        else:
            rtp, rtcp, client = self.udp
            (rtp if channel == 0 else rtcp).sendto(data, ("127.0.0.1", client + channel))


def serve_rtsp(clips: TsClip | list[TsClip]) -> int:
    """Serve a clip at ``rtsp://127.0.0.1:PORT/live``; a list, one clip per RTSP connection. The client
    picks the transport (FFmpeg: the ``rtsp_transport`` option). ``BYE_DELAY`` after the clip the server
    sends an RTCP BYE, then waits for the client's TEARDOWN or disconnection. Returns the port."""
    server = _listen()
    port = server.getsockname()[1]

    def accept() -> None:
        with server:
            for clip in clips if isinstance(clips, list) else [clips]:
                conn, _ = server.accept()
                _RtspSession(conn, clip, port).run()

    _serve(accept)
    return port
