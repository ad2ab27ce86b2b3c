"""A TCP relay on loopback that can be cut, to put a real network fault between one process and a server.

``TcpProxy(("127.0.0.1", port))`` listens on a free port of 127.0.0.1 and relays every connection to the target,
byte for byte, one thread per connection. ``cut()`` loses the path, as a partition does: nothing more passes on
open connections (what arrives is read and dropped, never answered) and new connections are accepted and held
without a byte relayed, so a client waits out its own timeouts. ``cut(refuse=True)`` resets every connection and
each new one at once instead (a path that answers with RSTs). ``restore()`` relays new connections again and
resets the ones held meanwhile (their clients gave up on them long ago).

:class:`TcpProxyProcess` runs the same relay in a process of its own (``python tests/tcp_proxy.py HOST PORT``,
commands on its stdin): relayed from threads of the test process, every byte would wait for that process's GIL,
held by whatever test runs meanwhile (a test thread running at a lower priority is descheduled holding it), and a
replica behind the relay lost its leases to the relay's delays on a loaded machine.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

CHUNK = 65536
POLL = 0.05  # seconds: how soon a relay thread notices cut() or close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a dead path's peer answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """A relay from ``127.0.0.1:<port>`` to ``target``; ``endpoint_url`` is its HTTP address."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._cut: str | None = None          # None | "drop" | "refuse"
        self._closed = False
        self._open: set[socket.socket] = set()
        self._held: list[socket.socket] = []
        self.relayed_connections = 0
        self.held_connections = 0
        self.dropped_bytes = 0
        self._threads = [threading.Thread(target=self._accept, name=f"tcp-proxy-{self.port}", daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def is_cut(self) -> bool:
        return self._cut is not None

    def cut(self, *, refuse: bool = False) -> None:
        with self._lock:
            self._cut = "refuse" if refuse else "drop"
            if refuse:
                for sock in self._open:
                    _reset(sock)
                self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._cut = None
            for sock in self._held:
                _reset(sock)
            self._held.clear()
            for sock in self._open:  # connections that lived through the cut lost bytes: end them
                _reset(sock)
            self._open.clear()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for sock in [*self._open, *self._held]:
                _reset(sock)
            self._open.clear()
            self._held.clear()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                mode = self._cut
                if mode == "refuse":
                    _reset(client)
                    continue
                if mode == "drop":
                    self._held.append(client)
                    self.held_connections += 1
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
                self.relayed_connections += 1
            thread = threading.Thread(target=self._relay, args=(client, upstream), daemon=True,
                                      name=f"tcp-proxy-{self.port}-relay")
            self._threads.append(thread)
            thread.start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            try:
                while not self._closed:
                    for key, _ in selector.select(POLL):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(CHUNK)
                        if not data:
                            return
                        if self._cut is not None:
                            self.dropped_bytes += len(data)
                            continue
                        peers[source].setblocking(True)
                        peers[source].sendall(data)
                        peers[source].setblocking(False)
            except (OSError, ValueError):  # reset by cut(refuse=True), restore() or close()
                return
            finally:
                with self._lock:
                    for sock in peers:
                        self._open.discard(sock)
                        with contextlib.suppress(OSError):
                            sock.close()


class TcpProxyProcess:
    """A :class:`TcpProxy` in a process of its own, driven through its stdin; ``endpoint_url`` is its HTTP address."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), target[0], str(target[1])],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the TCP relay exited before it listened ({self._process.wait()})")
        self.port = int(line)
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxyProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _command(self, command: str) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"the TCP relay answered {answer!r} to {command!r}")

    def cut(self, *, refuse: bool = False) -> None:
        self._command("refuse" if refuse else "cut")

    def restore(self) -> None:
        self._command("restore")

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            with contextlib.suppress(OSError):
                self._process.stdin.close()  # end of its commands: it closes and exits
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def main(argv: list[str]) -> int:
    """``tcp_proxy.py HOST PORT``: print the relay's port, then obey ``cut``, ``refuse`` and ``restore`` lines on stdin
    (answering ``ok`` to each) until stdin ends."""
    with TcpProxy((argv[0], int(argv[1]))) as proxy:
        print(proxy.port, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "cut":
                proxy.cut()
            elif command == "refuse":
                proxy.cut(refuse=True)
            elif command == "restore":
                proxy.restore()
            else:
                print(f"unknown command {command}", flush=True)
                continue
            print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
