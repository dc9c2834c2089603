"""sd_notify through systemd-python to a real datagram socket; watchdog configuration."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import systemd.daemon

from vtdlud.service.notify import Notifier, socket_notify, watchdog_interval


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


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_pure_python_notify_sends_what_libsystemd_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool
) -> None:
    """socket_notify (used where systemd-python is not installed) against the binding: the
    same datagrams for the same messages, the same answer without NOTIFY_SOCKET."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"vtdlud-test-{os.getpid()}-fallback"
        s.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    else:
        s.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    s.settimeout(2)
    try:
        for message in ("READY=1\nSTATUS=verdict PASS: 1 DMAR unit(s)", "WATCHDOG=1", "STATUS=é"):
            assert systemd.daemon.notify(message) is True
            assert socket_notify(message) is True
            assert s.recv(4096) == s.recv(4096) == message.encode()
    finally:
        s.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.daemon.notify("READY=1") is False and socket_notify("READY=1") is False
    with pytest.raises(OSError):
        socket_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_notifier_falls_back_without_systemd_python(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)  # `import systemd.daemon` fails
    monkeypatch.setitem(sys.modules, "systemd.daemon", None)
    n = Notifier()
    assert n.ready("fallback") and notify_socket.recv(4096) == b"READY=1\nSTATUS=fallback"
