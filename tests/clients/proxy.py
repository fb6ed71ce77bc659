"""A TCP proxy for tests that breaks a connection for real: after forwarding a set number of
response bytes it closes both sides, as a network failure mid-stream would.

    with CuttingProxy(upstream_port, cut_after_bytes=20_000) as proxy:
        StreamClient(proxy.url)...     # the first connection is cut; later ones pass whole
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<upstream_port>; cuts the first connection
    after `cut_after_bytes` bytes from upstream (never, if None). `downstream_bytes` counts
    what each connection forwarded from upstream, in order of connection."""

    def __init__(self, upstream_port: int, *, cut_after_bytes: int | None) -> None:
        self.upstream_port = upstream_port
        self.cut_after_bytes = cut_after_bytes
        self.connections = 0
        self.downstream_bytes: list[int] = []
        self.cut = threading.Event()  # set once the first connection has been cut
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._accepting.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed
                return
            self.connections += 1
            self.downstream_bytes.append(0)
            limit = self.cut_after_bytes if self.connections == 1 else None
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            pumps = (
                (client, upstream, None, None),
                (upstream, client, limit, self.connections - 1),
            )
            for source, sink, cap, counter in pumps:
                thread = threading.Thread(
                    target=self._pump,
                    args=(source, sink, cap, counter, client, upstream),
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        cap: int | None,
        counter: int | None,
        client: socket.socket,
        upstream: socket.socket,
    ) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if cap is not None and sent + len(data) >= cap:
                    sink.sendall(data[: cap - sent])
                    self._count(counter, cap - sent)
                    self.cut.set()
                    break
                sink.sendall(data)
                sent += len(data)
                self._count(counter, len(data))
        except OSError:
            pass
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _count(self, counter: int | None, sent: int) -> None:
        if counter is not None:
            self.downstream_bytes[counter] += sent
