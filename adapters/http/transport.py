"""One socket write per answer: uvicorn's HTTP protocol with its writes joined.

uvicorn writes an answer's status line and headers when the application
starts the answer, and its body apart when the body comes: two `send`
system calls on the event loop's thread for every answer. `OneWrite` hands
uvicorn's protocol a transport that keeps what is written during one turn
of the loop and writes it at the end of that turn, in one call (a close
writes what is kept first). Everything else goes to the real transport.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast


class JoinedWrites:
    """A transport whose writes of one loop turn reach the socket as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._kept: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._kept:
            self._loop.call_soon(self._flush)
        self._kept.append(bytes(data))

    def _flush(self) -> None:
        kept, self._kept = self._kept, []
        if kept and not self._transport.is_closing():
            self._transport.write(b"".join(kept))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def one_write_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (h11's when httptools is not there), writing once per turn."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class OneWrite(Base):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            joined = JoinedWrites(cast(asyncio.Transport, transport), self.loop)
            super().connection_made(cast(asyncio.Transport, joined))

    return OneWrite
