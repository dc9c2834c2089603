"""The ledger: exact round trip, refusal of torn or foreign files, and SIGKILL at random points."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from vtdlud.errors import ParseError
from vtdlud.service.ledger import (
    LEDGER_NAME,
    Ledger,
    LedgerDevice,
    LedgerRecords,
    LedgerUnit,
    ledger_from_json,
    ledger_to_json,
    mark_consumed,
    read_ledger,
    write_ledger,
)


def _ledger(generation: int, units: int = 8) -> Ledger:
    return Ledger(
        created_at="2026-11-24T05:00:00Z",
        vtdlud_version="0.1.0",
        kernel_release="6.12.117",
        boot_id="1dd4e417-4d92-4e38-8506-dce002ac0085",
        liveupdate_count=generation,
        units=tuple(
            LedgerUnit(
                address=0xFED90000 + 0x1000 * u,
                root_table=0x1A49000 + u,
                bits=tuple(range(0, 512, 1 + u % 3)),
                devices=tuple(LedgerDevice(f"0000:{b:02x}:00.0", b + 2, None) for b in range(32)),
            )
            for u in range(units)
        ),
    )


def test_round_trip_and_consume(tmp_path: Path) -> None:
    assert read_ledger(tmp_path) is None
    led = _ledger(3)
    write_ledger(tmp_path, led)
    assert read_ledger(tmp_path) == led
    assert ledger_from_json(ledger_to_json(led)) == led
    done = mark_consumed(tmp_path, "new-boot")
    assert done is not None and done.consumed and read_ledger(tmp_path) == done
    assert mark_consumed(tmp_path, "later-boot") == done  # consumed once
    assert oct((tmp_path / LEDGER_NAME).stat().st_mode & 0o777) == "0o644"


def test_record_addresses_round_trip_and_old_ledgers_still_load() -> None:
    """The record addresses the gate adds (for the post-kexec search on Linux 7.2) are optional
    members: a ledger without them loads, and says nothing about where the records are."""
    import dataclasses  # noqa: PLC0415
    import json  # noqa: PLC0415

    led = _ledger(1, units=2)
    with_addr = dataclasses.replace(
        led,
        units=(
            dataclasses.replace(
                led.units[0], hw_record=0x3E27010, record_pages=(0x3E27000, 0x3E29000)
            ),
            led.units[1],
        ),
        records=LedgerRecords("v1", 0x3E24000, (0x3E27000,), (0x3E29000,), (0x3E2C000,)),
    )
    assert ledger_from_json(ledger_to_json(with_addr)) == with_addr
    found = with_addr.record_addresses()
    assert found is not None and found.variant == "v1" and found.flb_phys == 0x3E24000
    assert [(u.unit, u.hw_record, u.pages) for u in found.units] == [
        (0xFED90000, 0x3E27010, (0x3E27000, 0x3E29000))
    ]
    assert found.heads.hw == (0x3E27000,) and found.heads.device == (0x3E2C000,)
    doc = json.loads(ledger_to_json(with_addr))
    assert doc["units"][0]["hw_record"] == "0x3e27010" and "hw_record" not in doc["units"][1]
    old = ledger_to_json(led)
    assert b"records" not in old and b"hw_record" not in old
    assert ledger_from_json(old) == led and led.record_addresses() is None
    doc["records"]["heads"] = "nope"
    with pytest.raises(ParseError, match="missing or malformed"):
        ledger_from_json(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b'{"ledger_format": 2}', "ledger_format 2, expected 1"),
        (b"[]", "ledger_format None, expected 1"),
        (b'{"ledger_format": 1, "units": []}', "missing or malformed member"),
    ],
)
def test_refuses_bad_files(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        ledger_from_json(data)


def test_refuses_every_truncation() -> None:
    data = ledger_to_json(_ledger(1, units=1))
    for cut in range(len(data) - 1):  # the last byte is the trailing newline
        with pytest.raises(ParseError):
            ledger_from_json(data[:cut])


def test_sigkill_at_random_points_leaves_old_or_new(tmp_path: Path) -> None:
    """A forked writer rewrites the ledger in a loop; SIGKILL at 60 random instants.

    After every kill the ledger parses and is one that was written (generation only grows)."""
    rng = random.Random(20261124)
    write_ledger(tmp_path, _ledger(0))
    last = 0
    for round_ in range(60):
        pid = os.fork()
        if pid == 0:  # child: write generations forever
            try:
                gen = last + 1
                while True:
                    write_ledger(tmp_path, _ledger(gen))
                    gen += 1
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        led = read_ledger(tmp_path)
        assert led is not None, f"round {round_}: ledger missing"
        assert led.liveupdate_count is not None and led.liveupdate_count >= last
        assert led == _ledger(led.liveupdate_count)
        last = led.liveupdate_count
    assert last > 0  # the writer did make progress
    # Temp files left by killed writers are swept by the next writer.
    write_ledger(tmp_path, _ledger(last + 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ledger.lock", LEDGER_NAME]
