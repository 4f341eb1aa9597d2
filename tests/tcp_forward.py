"""A TCP forwarder for the tests: makes a server that listens on loopback (the Ceph
gateway) reachable at another address of this machine, such as the driver's end of a
second host's veth pair (tests/netns_host.py), without changing the server. Bytes pass
unchanged both ways, so an S3 request signed for that address stays valid."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def forward(listen: tuple[str, int], target: tuple[str, int]) -> Iterator[str]:
    """Forward connections to ``listen`` to ``target`` until the block ends; yields
    ``http://host:port`` of ``listen``."""
    server = socket.create_server(listen, reuse_port=False)
    server.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(target, timeout=10)
            upstream.settimeout(None)
            client.settimeout(None)
            conns.extend((client, upstream))
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://{listen[0]}:{listen[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()
        for c in conns:
            c.close()
