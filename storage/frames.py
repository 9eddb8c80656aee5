"""Length-prefixed pickle frames over a pipe: how the crawl talks to its helper processes.

The extraction workers (crawler/extract_pool.py) and the writer process
(storage/writer.py) both read a 4-byte big-endian length and a pickle per
message from stdin and answer the same way on stdout. It lives in storage, the
lowest layer, so that the writer process needs nothing from crawler.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable
from typing import Any

_HEADER = 4


def frame(obj: Any) -> bytes:
    """One message: length prefix and pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(_HEADER, "big") + data


def _read_exact(stream: Any, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: Any) -> Any:
    """The next message, or None at the end of the stream."""
    header = _read_exact(stream, _HEADER)
    if header is None:
        return None
    data = _read_exact(stream, int.from_bytes(header, "big"))
    return None if data is None else pickle.loads(data)


def serve(start: Callable[[Any], Callable[[Any], Any]]) -> int:
    """A helper process's main loop: `start` takes the first message (the crawl's setup), prepares the
    process and returns the function that answers every later ``(seq, work)`` with ``(seq, answer)``
    (it must not raise: the crawl waits for every answer). ``(0, pid)`` says it is ready; the loop
    ends when the crawl closes stdin. Returns the exit status."""
    # A crawl stopped from its terminal or by the scheduler signals its whole process group; the
    # crawl decides when a helper is done (it closes its stdin), so everything sent is answered.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # Frames go to the original stdout only; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = os.fdopen(0, "rb")
    init = read_frame(stdin)
    if init is None:
        return 0
    answer = start(init)
    out.write(frame((0, os.getpid())))
    out.flush()
    while (message := read_frame(stdin)) is not None:
        seq, work = message
        out.write(frame((seq, answer(work))))
        out.flush()
    return 0
