"""A loopback TCP relay that spreads connections over several upstream ports, one after the other.

``accept`` and ``compare`` measure a model through one local port. On Kubernetes that port must
reach every replica, not the one pod a single ``kubectl port-forward`` picks: the target puts this
relay in front of every ready pod (their addresses where the pod network is routed to this host,
else one port-forward each). Connection *i* goes to upstream
*i mod n*, so the load generator's keep-alive connections land on every replica whenever there are
at least as many connections as replicas — unlike a Service's kube-proxy, which picks a pod at
random per connection. Bytes are copied as they come; the relay never parses HTTP.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def round_robin(upstreams: Sequence[tuple[str, int]], host: str = "127.0.0.1") -> Iterator[int]:
    """Listens on an ephemeral port of ``host`` for the ``with`` block and yields it; ``upstreams``
    are (address, port) pairs."""
    if not upstreams:
        raise ValueError("a relay needs at least one upstream port")
    listener = socket.create_server((host, 0))
    listener.settimeout(0.2)
    turn = itertools.cycle(upstreams)
    stop = threading.Event()
    open_sockets: set[socket.socket] = set()
    guard = threading.Lock()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(next(turn), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with guard:
                open_sockets.update((client, upstream))
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        with guard:
            for s in open_sockets:
                with contextlib.suppress(OSError):
                    s.close()
