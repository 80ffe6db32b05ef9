"""A loopback TCP proxy for the store tests: put it in front of PostgreSQL, then ``freeze()`` it
(nothing is forwarded or accepted any more, every socket stays open: a hung server or a stalled
path, whose TCP stack still acknowledges), ``thaw()`` it, or ``cut()`` every connection through it
(a dead path: the server sees them close)."""

from __future__ import annotations

import selectors
import socket
import struct
import threading


class TcpProxy:
    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._frozen = False
        self._cut_requested = False
        self._closed = False
        self._idle = threading.Event()   # set while frozen once the loop has stopped forwarding
        self.accepted = 0
        self._thread = threading.Thread(target=self._loop, name="tcp-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def url_for(self, pg_url: str) -> str:
        """``pg_url`` with its host and port replaced by the proxy's."""
        from sqlalchemy.engine import make_url

        return make_url(pg_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def __enter__(self) -> "TcpProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def freeze(self) -> None:
        with self._lock:
            self._frozen = True
            self._idle.clear()
        self._idle.wait(5)

    def thaw(self) -> None:
        with self._lock:
            self._frozen = False

    def cut(self) -> None:
        """Reset every connection through the proxy (new ones are still accepted)."""
        with self._lock:
            self._cut_requested = True
        while True:
            with self._lock:
                if not self._cut_requested or self._closed:
                    return
            self._idle.wait(0.02)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._thread.join(5)
        for s in list(self._peers):
            s.close()
        self._listener.close()

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while True:
            with self._lock:
                closed, frozen, cut = self._closed, self._frozen, self._cut_requested
            if closed:
                return
            if cut:
                self._reset_all()
                with self._lock:
                    self._cut_requested = False
                continue
            if frozen:
                self._idle.set()
                threading.Event().wait(0.02)
                continue
            for key, _ in self._sel.select(0.05):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._forward(key.fileobj)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        client.setblocking(True)
        upstream = socket.create_connection(self.target, timeout=5)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client], self._peers[upstream] = upstream, client
        self._sel.register(client, selectors.EVENT_READ, None)
        self._sel.register(upstream, selectors.EVENT_READ, None)
        self.accepted += 1

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        self._drop(sock, peer)

    def _drop(self, *socks: socket.socket, reset: bool = False) -> None:
        for s in socks:
            self._peers.pop(s, None)
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    def _reset_all(self) -> None:
        for s in list(self._peers):
            if s in self._peers:
                self._drop(s, self._peers[s], reset=True)
