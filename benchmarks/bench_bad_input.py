"""Seconds to a clean error on a source that cannot be read: the speed claims that tests/codec/test_bad_input.py
leaves out (it asserts the cause in the message, which a loaded machine cannot change; the seconds it can).

    python benchmarks/bench_bad_input.py [--repeats 5] [--timeout 0.5]

- a refused URL (``tcp://127.0.0.1:1``, nothing listens) is refused at once, whatever the timeout (30 s here): the
  seconds to ``VideoOpenError: ... refused`` (the claim: well under a second);
- a server that accepts and sends nothing: the seconds to ``VideoOpenError: timed out after T s``, against the
  timeout ``T`` (``--timeout``): the ratio says how closely FFmpeg's timeout is kept (the claim: under 10x).

Per case the median and largest of ``--repeats`` tries.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time

from taplab.codec import open_video
from taplab.errors import VideoOpenError


def seconds_to_error(url: str, timeout: float, expect: str) -> float:
    start = time.perf_counter()
    try:
        open_video(url, timeout=timeout).close()
    except VideoOpenError as exc:
        if expect not in str(exc):
            raise SystemExit(f"unexpected error for {url}: {exc}") from None
        return time.perf_counter() - start
    raise SystemExit(f"{url} opened")


def silent_server() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []  # the accepted connections, kept open and silent
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(64)], daemon=True).start()
    return server, server.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=0.5)
    args = parser.parse_args()
    refused = [seconds_to_error("tcp://127.0.0.1:1", 30.0, "refused") for _ in range(args.repeats)]
    server, port = silent_server()
    with server:
        silent = [seconds_to_error(f"tcp://127.0.0.1:{port}", args.timeout, "timed out")
                  for _ in range(args.repeats)]
    print("| case | timeout (s) | median (s) | max (s) | max / timeout |")
    print("|---|---:|---:|---:|---:|")
    print(f"| refused URL | 30 | {statistics.median(refused):.3f} | {max(refused):.3f} | {max(refused) / 30:.3f} |")
    print(f"| silent server | {args.timeout:g} | {statistics.median(silent):.3f} | {max(silent):.3f} | "
          f"{max(silent) / args.timeout:.2f} |")


if __name__ == "__main__":
    main()
