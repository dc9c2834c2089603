"""sd_notify through systemd-python to a real datagram socket; watchdog configuration."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from vtdlud.service.notify import Notifier, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield s
    s.close()


def test_messages_reach_the_socket(notify_socket: socket.socket) -> None:
    n = Notifier()
    assert n.enabled
    assert n.ready("verdict PASS: 1 DMAR unit(s)")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=verdict PASS: 1 DMAR unit(s)"
    assert n.reloading() and n.ping() and n.stopping()
    got = [notify_socket.recv(4096) for _ in range(3)]
    assert got == [
        b"RELOADING=1\nSTATUS=reloading the configuration",
        b"WATCHDOG=1",
        b"STOPPING=1\nSTATUS=stopping",
    ]


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"vtdlud-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert Notifier().status("x")
        assert s.recv(100) == b"STATUS=x"
    finally:
        s.close()


def test_without_systemd_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready("x") and n.errors == 0 and n.watchdog is None


def test_a_vanished_socket_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.status("x") and n.errors == 1


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # someone else's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(env, 42) == interval
