"""``attach_tty``: the user's terminal joined to a TTY exec's socket, here a socket pair and a pty."""

from __future__ import annotations

import os
import pty
import signal
import socket
import termios
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from containai.runtime.tty import attach_tty


class Peer:
    """The container's side: records what it receives and answers as ``respond`` says."""

    def __init__(self, sock: socket.socket, respond: Callable[[socket.socket, bytearray], None]) -> None:
        self.received = bytearray()
        self._thread = threading.Thread(target=respond, args=(sock, self.received))

    def __enter__(self) -> Peer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


@pytest.fixture(autouse=True)
def _terminal_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINES", "40")
    monkeypatch.setenv("COLUMNS", "120")


def read_to_eof_then_answer(answer: bytes) -> Callable[[socket.socket, bytearray], None]:
    def respond(sock: socket.socket, received: bytearray) -> None:
        while chunk := sock.recv(4096):
            received.extend(chunk)
        sock.sendall(answer)
        sock.shutdown(socket.SHUT_WR)

    return respond


def test_pipes_stdin_in_and_output_out_until_the_container_ends(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    os.write(in_write, b"echo hi\n")
    os.close(in_write)  # local EOF: our side shuts its write half, the program inside decides the end
    sizes: list[tuple[int, int]] = []
    try:
        with Peer(theirs, read_to_eof_then_answer(b"hi\r\n")) as peer:
            attach_tty(
                ours, resize=lambda rows, cols: sizes.append((rows, cols)), stdin=in_read, stdout=out_write
            )
        assert bytes(peer.received) == b"echo hi\n"
        assert os.read(out_read, 100) == b"hi\r\n"
    finally:
        for fd in (in_read, out_read, out_write):
            os.close(fd)
    assert sizes == [(40, 120)]  # sent once at the start; no SIGWINCH without a terminal
    assert ours.fileno() == -1  # closed on the way out


def test_a_failing_resize_does_not_end_the_session(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    os.close(in_write)

    def refuse(rows: int, cols: int) -> None:
        raise OSError("exec is gone")

    try:
        with Peer(theirs, read_to_eof_then_answer(b"bye")):
            attach_tty(ours, resize=refuse, stdin=in_read, stdout=out_write)
        assert os.read(out_read, 100) == b"bye"
    finally:
        for fd in (in_read, out_read, out_write):
            os.close(fd)


def test_a_terminal_goes_raw_follows_resizes_and_is_restored(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    master, slave = pty.openpty()
    before_attrs = termios.tcgetattr(slave)
    before_handler = signal.getsignal(signal.SIGWINCH)
    sizes: list[tuple[int, int]] = []
    seen_raw: list[bool] = []

    def respond(sock: socket.socket, received: bytearray) -> None:
        # Type once the terminal is raw (going raw flushes earlier input), then resize the window.
        deadline = time.monotonic() + 5
        while termios.tcgetattr(slave)[3] & termios.ICANON and time.monotonic() < deadline:
            time.sleep(0.005)
        seen_raw.append(not termios.tcgetattr(slave)[3] & termios.ICANON)
        os.write(master, b"\x02d")  # Ctrl-B d reaches the program as bytes, not as a signal
        received.extend(sock.recv(4096))
        os.kill(os.getpid(), signal.SIGWINCH)
        while len(sizes) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        sock.sendall(b"[detached]")
        sock.close()

    try:
        with Peer(theirs, respond) as peer:
            attach_tty(ours, resize=lambda rows, cols: sizes.append((rows, cols)), stdin=slave, stdout=slave)
        assert bytes(peer.received) == b"\x02d"
        assert seen_raw == [True]
        assert termios.tcgetattr(slave) == before_attrs
        assert signal.getsignal(signal.SIGWINCH) == before_handler
        assert sizes == [(40, 120), (40, 120)]
        assert os.read(master, 100) == b"[detached]"
    finally:
        os.close(master)
        os.close(slave)
