"""A storm of 2,048 uevents costs at most a few evaluations, and the last one sees the final
state (the shape of SR-IOV enabling 2,048 VFs; the benchmark creates the VFs themselves, which
on a disk-backed /tmp takes seconds of file creation the suite does not need)."""

from __future__ import annotations

import itertools
import os
import time

from tests.daemon.conftest import VFIO_DEVICE, DaemonFactory, HostBed, storms_possible
from tests.needs import needs

STORM = 2048
ACTIONS = ("add", "change", "bind", "unbind")


@needs(storms_possible(), "needs root to raise net.unix.max_dgram_qlen")
def test_storm_of_2048_uevents(daemon_factory: DaemonFactory, testbed: HostBed) -> None:
    d = daemon_factory()
    before = d.evaluations()
    assert before == 1 and d.status()["verdict"] == "PASS"
    bdfs = sorted(os.listdir(testbed.sys_dir / "bus/pci/devices"))
    paths = [testbed.devpath(b) for b in bdfs]
    events = list(itertools.islice(itertools.cycle(itertools.product(paths, ACTIONS)), STORM))
    t0 = time.monotonic()
    for path, action in events[:-1]:
        testbed.uevent(path, action)
    # The final state changes while the storm is still arriving.
    testbed.set_driver(VFIO_DEVICE, "e1000e")
    testbed.uevent(testbed.devpath(VFIO_DEVICE), "unbind")
    last_event = time.monotonic()
    d.wait_message(lambda m: "verdict FAIL" in m, 10.0)
    settled = time.monotonic()
    d.drain(0.6)  # nothing else follows
    evaluations = d.evaluations() - before
    print(
        f"storm: {STORM} uevents in {last_event - t0:.2f}s, {evaluations} evaluation(s), "
        f"final state {settled - last_event:.2f}s after the last uevent"
    )
    assert 1 <= evaluations <= 3, d.messages
    assert settled - last_event <= 2.0
    doc = d.status()
    assert doc["verdict"] == "FAIL" and "VTD026" in d.codes()
    daemon_doc = d.daemon_json()
    assert daemon_doc["uevents"]["relevant"] == STORM
    assert daemon_doc["evaluations"] == before + evaluations
    assert daemon_doc["last_evaluation"]["trigger"] == "uevent"
