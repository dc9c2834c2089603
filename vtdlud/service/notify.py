"""sd_notify for ``Type=notify``: READY, STATUS, RELOADING, STOPPING and watchdog pings.

Sent through systemd-python's ``systemd.daemon.notify`` (imported on first use), or, where
systemd-python is not installed (it has no wheel: a ``pip install`` without a compiler), by
:func:`socket_notify`, which speaks sd_notify's protocol itself: one datagram to the AF_UNIX
socket ``$NOTIFY_SOCKET`` names (``@name``: the abstract namespace), as ``sd_pid_notify()``
sends it for the calling process (tests/daemon/test_notify.py compares the two).  Without
``NOTIFY_SOCKET`` (not started by systemd) nothing is sent.  The watchdog follows
sd_watchdog_enabled(3): enabled when ``WATCHDOG_USEC`` is set and ``WATCHDOG_PID`` is unset or
names this process; the daemon pings at half the interval, from its event loop.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

Sender = Callable[[str], bool]


def socket_notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """sd_notify(0, message) without libsystemd: False when ``NOTIFY_SOCKET`` is unset (or not
    an AF_UNIX address: vsock is not spoken here), True once sent; OSError when sending fails."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        address = "\0" + path[1:]
    elif path.startswith("/"):
        address = path
    else:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message.encode(), address)
    return True


def _systemd_notify(message: str) -> bool:
    try:
        import systemd.daemon  # noqa: PLC0415 - the daemon path only
    except ImportError:
        return socket_notify(message)
    return bool(systemd.daemon.notify(message))


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when the watchdog is off."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    def __init__(
        self, env: Mapping[str, str] | None = None, *, sender: Sender = _systemd_notify
    ) -> None:
        env = os.environ if env is None else env
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.watchdog = watchdog_interval(env, os.getpid())
        self._send = sender
        self.errors = 0

    def send(self, *lines: str) -> bool:
        if not self.enabled:
            return False
        try:
            ok = self._send("\n".join(lines))
        except OSError:
            ok = False
        if not ok:
            self.errors += 1
        return ok

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        return self.send("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")
