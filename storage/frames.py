"""Length-prefixed pickle frames over a pipe: how the crawl talks to its helper processes.

The extraction workers (crawler/extract_pool.py) and the writer process
(storage/writer.py) both read a 4-byte big-endian length and a pickle per
message from stdin and answer the same way on stdout. It lives in storage, the
lowest layer, so that the writer process needs nothing from crawler.
"""

from __future__ import annotations

import pickle
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
