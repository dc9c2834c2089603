"""Benchmark: the real ``vtdlud run`` daemon, on a simulated q35 host in a umockdev testbed.

    .venv/bin/python benchmarks/bench_daemon.py [--idle SECONDS] [--latency N] [--vfs N]

Needs root (it starts a systemd-journald of its own in a private mount namespace, as the daemon
tests do, and raises net.unix.max_dgram_qlen while the daemon creates its uevent socket:
umockdev's sender aborts on a full socket) and umockdev (it re-executes itself under
``umockdev-wrapper``).  Prints, against the issue's goals:

1. idle: wake-ups over the window (voluntary context switches of the daemon, and the watchdog
   pings received; WATCHDOG_USEC=30 s as with the unit's WatchdogSec=30s), threads, RSS and
   CPU per idle minute (utime+stime from /proc/<pid>/stat);
2. uevent -> journald latency: N times, rebind 00:05.0 (the policy wants it on vfio-pci, so a
   VTD026 finding appears or resolves) and send the uevent; latency = journald's receive time
   of the finding's entry (``__REALTIME_TIMESTAMP``) minus the time just before the uevent;
   p50/p99/max;
3. storms of N VF uevents (default 2,048): "burst" — the VFs' sysfs directories already exist
   and their "add" uevents come as fast as umockdev sends them; "paced" — each VF is created
   and announced one after the other (the speed of file creation on this machine's /tmp, as
   SR-IOV enabling paces the kernel's uevents); the evaluations each storm cost, how long after
   its last uevent status.json listed every VF, and the last evaluation's duration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.daemon.conftest import (  # noqa: E402 - after the path
    VFIO_DEVICE,
    DaemonProc,
    HostBed,
    Journald,
    private_journal_mounts,
)
from tests.kernelmodel.scenarios import q35_host  # noqa: E402

GOALS = {
    "idle_wakeups": "no wake-ups besides watchdog pings",
    "rss": "<= 40 MB",
    "cpu": "<= 50 ms per idle minute",
    "latency": "p99 <= 0.5 s",
    "storm": "<= 3 evaluations, final state within 2 s",
}


def _reexec_under_umockdev() -> None:
    if "libumockdev-preload" in os.environ.get("LD_PRELOAD", ""):
        return
    wrapper = shutil.which("umockdev-wrapper")
    if wrapper is None:
        sys.exit("bench_daemon: needs umockdev (apt-get install umockdev gir1.2-umockdev-1.0)")
    os.execv(wrapper, [wrapper, sys.executable, *sys.argv])


def _proc(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "voluntary": float(fields["voluntary_ctxt_switches"]),
        "involuntary": float(fields["nonvoluntary_ctxt_switches"]),
        "threads": float(fields["Threads"]),
        "rss_kb": float(fields["VmRSS"].split()[0]),
        "hwm_kb": float(fields["VmHWM"].split()[0]),
        "cpu_s": (int(rest[11]) + int(rest[12])) / ticks,  # utime + stime
    }


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_idle(d: DaemonProc, seconds: float) -> None:
    d.drain(0.5)
    a = _proc(d.pid)
    got = d.collect(seconds)
    b = _proc(d.pid)
    pings = sum(m == "WATCHDOG=1" for m in got)
    others = [m for m in got if m != "WATCHDOG=1"]
    wakeups = b["voluntary"] - a["voluntary"]
    cpu_min = (b["cpu_s"] - a["cpu_s"]) * 60 / seconds
    print(f"idle window            {seconds:.0f} s, WATCHDOG_USEC=30000000")
    print(f"  wake-ups             {wakeups:.0f} (voluntary switches; involuntary "
          f"{b['involuntary'] - a['involuntary']:.0f}); watchdog pings {pings}; "
          f"other notify messages {len(others)}   goal: {GOALS['idle_wakeups']}")  # fmt: skip
    print(f"  threads              {b['threads']:.0f}")
    print(f"  RSS                  {b['rss_kb'] / 1024:.1f} MB (peak {b['hwm_kb'] / 1024:.1f} MB)"
          f"   goal: {GOALS['rss']}")  # fmt: skip
    print(f"  CPU                  {cpu_min * 1000:.1f} ms per idle minute   goal: {GOALS['cpu']}")


def bench_latency(d: DaemonProc, bed: HostBed, journald: Journald, n: int) -> None:
    sent: list[float] = []
    path = bed.devpath(VFIO_DEVICE)
    for i in range(n):
        bed.set_driver(VFIO_DEVICE, "e1000e" if i % 2 == 0 else "vfio-pci")
        evals = d.evaluations()
        sent.append(time.time())
        bed.uevent(path, "unbind" if i % 2 == 0 else "bind")
        d.wait_evaluation(evals, 10.0)
    entries = journald.wait_for(
        lambda e: len(e) >= n, 10.0, _PID=d.pid, VTDLUD_CODE="VTD026", VTDLUD_SOURCE="daemon"
    )
    got = [int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in entries][-n:]
    lat = [g - s for g, s in zip(got, sent, strict=True)]
    print(f"uevent -> journald     {n} changes (VTD026 new/resolved), default debounce 0.2 s")
    print(f"  latency              p50 {_pct(lat, 50) * 1000:.0f} ms, p99 "
          f"{_pct(lat, 99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, mean "
          f"{statistics.mean(lat) * 1000:.0f} ms   goal: {GOALS['latency']}")  # fmt: skip


def bench_storm(d: DaemonProc, bed: HostBed, vfs: int, *, paced: bool, bus0: int) -> None:
    config = bed.host_path("/sys/bus/pci/devices/0000:00:02.0/config").read_bytes()
    base = d.status_devices()
    unit = bed.real("/sys/class/iommu/dmar0")
    root_bus = bed.sys_dir / "devices" / f"pci0000:{bus0:02x}"

    def create(i: int) -> str:
        bus, devfn = bus0 + 1 + i // 256, i % 256
        bdf = f"0000:{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"
        devdir = root_bus / bdf
        devdir.mkdir(parents=True)
        for name, text in (("vendor", "0x8086\n"), ("device", "0x1520\n"),
                           ("class", "0x020000\n"), ("uevent", f"PCI_SLOT_NAME={bdf}\n")):  # fmt: skip
            (devdir / name).write_text(text)
        (devdir / "config").write_bytes(config)
        (devdir / "subsystem").symlink_to(os.path.relpath(bed.sys_dir / "bus/pci", devdir))
        (devdir / "iommu").symlink_to(os.path.relpath(unit, devdir))
        (unit / "devices" / bdf).symlink_to(os.path.relpath(devdir, unit / "devices"))
        links = bed.sys_dir / "bus/pci/devices"
        (links / bdf).symlink_to(os.path.relpath(devdir, links))
        return "/sys/" + str(devdir.relative_to(bed.sys_dir))

    before = d.evaluations()
    t_create = 0.0
    if paced:
        t0 = time.monotonic()
        for i in range(vfs):
            bed.uevent(create(i), "add")
        last = time.monotonic()
        sending = last - t0
    else:
        t0 = time.monotonic()
        paths = [create(i) for i in range(vfs)]
        t_create = time.monotonic() - t0
        t0 = time.monotonic()
        for p in paths:
            bed.uevent(p, "add")
        last = time.monotonic()
        sending = last - t0
    d.wait_message(lambda m: "evaluation #" in m and d.status_devices() == base + vfs, 60.0)
    settled = time.monotonic() - last
    d.drain(1.0)
    evaluations = d.evaluations() - before
    info = d.daemon_json()["last_evaluation"]
    kind = "paced" if paced else "burst"
    extra = "" if paced else f" (the VF directories were created first, in {t_create:.1f} s)"
    print(f"storm ({kind})          {vfs} VF add uevents sent in {sending:.2f} s{extra}")
    print(f"  evaluations          {evaluations}; final state {settled:.2f} s after the last "
          f"uevent; last evaluation {info['duration_seconds']:.2f} s for "
          f"{base + vfs} devices   goal: {GOALS['storm']}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=float, default=60.0, help="idle window in seconds")
    ap.add_argument("--latency", type=int, default=100, help="uevent -> journald samples")
    ap.add_argument("--vfs", type=int, default=2048, help="VF uevents per storm")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_daemon: run as root (journald, net.unix.max_dgram_qlen)")
    _reexec_under_umockdev()

    import gi

    gi.require_version("UMockdev", "1.0")
    from gi.repository import UMockdev

    # A journald of its own in a private mount namespace, as the daemon tests do: neither the
    # host's journald nor a concurrent test run sees (or disturbs) these entries.
    private_journal_mounts()
    journald = Journald()
    journald.start()
    work = Path(tempfile.mkdtemp(prefix="vtdlud-bench-"))
    tb = UMockdev.Testbed.new()
    d: DaemonProc | None = None
    try:
        bed = HostBed(tb, work)
        bed.install(q35_host(scalable=False, seed=1))
        d = DaemonProc(work, bed, watchdog_usec=30_000_000)
        d.launch()
        print(f"vtdlud run, pid {d.pid}, python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs; first evaluation: {d.messages[-1]}")  # fmt: skip
        bench_idle(d, args.idle)
        bench_latency(d, bed, journald, args.latency)
        bench_storm(d, bed, args.vfs, paced=False, bus0=0x80)
        bench_storm(d, bed, args.vfs, paced=True, bus0=0xA0)
        rss = _proc(d.pid)
        print(f"after the storms       RSS {rss['rss_kb'] / 1024:.1f} MB, "
              f"peak {rss['hwm_kb'] / 1024:.1f} MB, threads {rss['threads']:.0f}")  # fmt: skip
        rc, elapsed = d.stop()
        print(f"SIGTERM                exit {rc} after {elapsed * 1000:.0f} ms")
    finally:
        if d is not None:
            d.close()
        tb.clear()
        shutil.rmtree(work, ignore_errors=True)
        if journald.proc is not None:
            journald.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
