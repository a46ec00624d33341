"""Connecting the user's terminal to a TTY exec in a container, over the Engine API's hijacked socket.

The local terminal goes to raw mode (so Ctrl-C, Ctrl-B D and arrow keys reach the program inside),
window size changes are forwarded, and the terminal is restored however the session ends.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from typing import Any

_CHUNK = 65536


def _raw_socket(sock: Any) -> Any:
    """The SDK hands back a SocketIO (or a raw socket over SSH); we want the socket object."""
    return getattr(sock, "_sock", sock)


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach_tty(
    sock: Any, *, resize: Callable[[int, int], None], stdin: int | None = None, stdout: int | None = None
) -> None:
    """Pump bytes between the terminal and ``sock`` until the program inside ends."""
    conn = _raw_socket(sock)
    in_fd = sys.stdin.fileno() if stdin is None else stdin
    out_fd = sys.stdout.fileno() if stdout is None else stdout

    def send_size(*_: object) -> None:
        size = shutil.get_terminal_size()
        with contextlib.suppress(Exception):
            resize(size.lines, size.columns)

    previous = signal.signal(signal.SIGWINCH, send_size) if os.isatty(out_fd) else None
    send_size()
    stdin_open = True
    try:
        with _raw_terminal(in_fd):
            while True:
                readers = [conn, in_fd] if stdin_open else [conn]
                ready, _, _ = select.select(readers, [], [])
                if conn in ready:
                    data = conn.recv(_CHUNK)
                    if not data:
                        return
                    os.write(out_fd, data)
                if stdin_open and in_fd in ready:
                    data = os.read(in_fd, _CHUNK)
                    if not data:
                        stdin_open = False  # EOF locally: the program inside decides when to end
                        with contextlib.suppress(OSError):
                            conn.shutdown(1)  # SHUT_WR
                        continue
                    conn.sendall(data)
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
        with contextlib.suppress(Exception):
            sock.close()
            conn.close()  # the wrapper's close alone leaves the socket open until garbage collection
