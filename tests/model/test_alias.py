"""DMA aliases (pci_for_each_dma_alias) and the config-space facts they need."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtdlud.errors import ParseError
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.alias import MAX_DEPTH, DmaAliases, PciNode, Rid, dma_aliases, shared_aliases
from vtdlud.model.pci import (
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_PCIE_BRIDGE,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXP_TYPE_UPSTREAM,
)
from vtdlud.parse.pciconfig import parse_pci_config
from vtdlud.parse.sysfs import parse_bdf


def _nodes(root: Path) -> dict[str, PciNode]:
    snap = take_snapshot(HostRoot(root))
    out = {}
    for bdf, d in snap.pci_devices.items():
        b = parse_bdf(bdf)
        cfg = d.config
        out[bdf] = PciNode(
            Rid(b.segment, b.bus, b.devfn),
            d.parent,
            cfg.pcie_type if cfg else None,
            cfg.secondary_bus if cfg else None,
        )
    return out


def test_capture_bridge_alias(capture_root: Callable[[str], Path]) -> None:
    """Real topology: 04:00.0 is QEMU's pcie-pci-bridge (PCIe type 7) to bus 05."""
    nodes = _nodes(capture_root("a_legacy"))
    assert nodes["0000:04:00.0"].pcie_type == PCI_EXP_TYPE_PCI_BRIDGE
    assert nodes["0000:04:00.0"].secondary_bus == 5
    assert nodes["0000:00:04.3"].pcie_type == PCI_EXP_TYPE_ROOT_PORT
    assert [str(r) for r in dma_aliases("0000:05:01.0", nodes) or ()] == [
        "0000:05:01.0",
        "0000:05:00.0",  # (secondary bus 5, devfn 0): the context entry debugfs shows for 05:00.0
    ]
    assert [str(r) for r in dma_aliases("0000:01:00.0", nodes) or ()] == ["0000:01:00.0"]
    shared = shared_aliases("0000:05:01.0", list(nodes), nodes)
    assert {k: [str(r) for r in v] for k, v in shared.items()} == {"0000:05:02.0": ["0000:05:00.0"]}


def _node(bdf: str, parent: str | None, pcie_type: int | None, sec: int | None = None) -> PciNode:
    b = parse_bdf(bdf)
    return PciNode(Rid(b.segment, b.bus, b.devfn), parent, pcie_type, sec)


def test_conventional_and_reverse_bridges() -> None:
    nodes = {
        "0000:00:1e.0": _node("0000:00:1e.0", None, None, 6),  # conventional PCI bridge
        "0000:06:00.0": _node("0000:06:00.0", "0000:00:1e.0", PCI_EXP_TYPE_PCIE_BRIDGE, 7),
        "0000:07:00.0": _node("0000:07:00.0", "0000:06:00.0", 0),
    }
    # PCI-to-PCIe bridge adds its own RID, then the conventional bridge adds its own RID.
    assert [str(r) for r in dma_aliases("0000:07:00.0", nodes) or ()] == [
        "0000:07:00.0",
        "0000:06:00.0",
        "0000:00:1e.0",
    ]
    # The bridge itself shares its RID with the device behind it.
    assert [
        str(r) for r in shared_aliases("0000:07:00.0", ["0000:06:00.0"], nodes)["0000:06:00.0"]
    ] == [
        "0000:06:00.0",
        "0000:00:1e.0",
    ]


def test_unknown_bridge_or_loop_is_not_visible() -> None:
    nodes = {"0000:05:01.0": _node("0000:05:01.0", "0000:04:00.0", None)}
    assert dma_aliases("0000:05:01.0", nodes) is None  # bridge config unreadable
    loop = {
        "0000:01:00.0": _node("0000:01:00.0", "0000:02:00.0", PCI_EXP_TYPE_ROOT_PORT, 2),
        "0000:02:00.0": _node("0000:02:00.0", "0000:01:00.0", PCI_EXP_TYPE_ROOT_PORT, 1),
    }
    assert dma_aliases("0000:01:00.0", loop) is None
    assert dma_aliases("0000:09:00.0", loop) is None


def _config(pcie_type: int | None, pri_ctrl: int | None) -> bytes:
    cfg = bytearray(4096)
    cfg[0:4] = struct.pack("<HH", 0x8086, 0x1572)
    cfg[0x06] = 0x10  # PCI_STATUS_CAP_LIST
    cfg[0x34] = 0x40
    if pcie_type is not None:
        cfg[0x40:0x44] = bytes([0x10, 0x00]) + struct.pack("<H", pcie_type << 4 | 2)
        if pri_ctrl is not None:
            # ext cap at 0x100: ATS (0x0f) -> next 0x140: PRI (0x13), version 1
            cfg[0x100:0x104] = struct.pack("<I", 0x000F | 1 << 16 | 0x140 << 20)
            cfg[0x140:0x144] = struct.pack("<I", 0x0013 | 1 << 16)
            cfg[0x144:0x146] = struct.pack("<H", pri_ctrl)
    return bytes(cfg)


def test_pri_enable_bit() -> None:
    assert parse_pci_config(_config(0, 0x0001)).pri_enabled is True  # PCI_PRI_CTRL_ENABLE
    assert parse_pci_config(_config(0, 0x0000)).pri_enabled is False
    assert parse_pci_config(_config(0, None)).pri_enabled is False  # no PRI capability
    assert parse_pci_config(_config(0, 1)[:256]).pri_enabled is None  # ext space not readable
    assert parse_pci_config(_config(None, None)).pri_enabled is False  # conventional PCI
    assert parse_pci_config(_config(0, 1)[:64]).pcie_type is None  # unprivileged read


def test_config_errors() -> None:
    with pytest.raises(ParseError, match="expected at least 64"):
        parse_pci_config(b"\x86\x80" * 10)
    looping = bytearray(_config(0, None))
    looping[0x41] = 0x40  # next pointer to itself
    with pytest.raises(ParseError, match="capability list loops at 0x40"):
        parse_pci_config(bytes(looping))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=4096))
def test_random_config_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_pci_config(data)


def _walk_one(bdf: str, nodes: dict[str, PciNode]) -> tuple[Rid, ...] | None:
    """The kernel's walk for one device, step by step (at most MAX_DEPTH steps): the reference
    DmaAliases must agree with."""
    node = nodes.get(bdf)
    if node is None:
        return None
    out, parent = [node.rid], node.parent
    for _ in range(MAX_DEPTH):
        if parent is None:
            return tuple(dict.fromkeys(out))
        bridge = nodes.get(parent)
        if bridge is None:
            return None
        if bridge.pcie_type == PCI_EXP_TYPE_PCI_BRIDGE:
            if bridge.secondary_bus is None:
                return None
            out.append(Rid(bridge.rid.segment, bridge.secondary_bus, 0))
        elif bridge.pcie_type in (PCI_EXP_TYPE_PCIE_BRIDGE, None):
            out.append(bridge.rid)
        parent = bridge.parent
    return None


_TYPES = (
    None,
    0,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXP_TYPE_UPSTREAM,
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_PCIE_BRIDGE,
)


@st.composite
def _topologies(draw: st.DrawFn) -> dict[str, PciNode]:
    """Random parent graphs: trees, unknown parents, loops, shared secondary buses."""
    n = draw(st.integers(1, 24))
    names = [f"0000:{i:02x}:00.0" for i in range(n)]
    nodes = {}
    for i, name in enumerate(names):
        parent = draw(st.sampled_from([None, "0000:ff:00.0", *names]))
        kind = draw(st.sampled_from(_TYPES))
        sec = draw(st.one_of(st.none(), st.integers(0, 3)))
        nodes[name] = PciNode(Rid(0, i, draw(st.integers(0, 2))), parent, kind, sec)
    return nodes


@settings(max_examples=400, deadline=None)
@given(_topologies())
def test_dma_aliases_of_many_devices_match_the_walk(nodes: dict[str, PciNode]) -> None:
    walk = DmaAliases(nodes)
    order = list(nodes)[::-1]  # memoized bridges are reused whatever the order of the asks
    assert {b: walk.of(b) for b in order} == {b: _walk_one(b, nodes) for b in order}
    assert walk.every() == {b: dma_aliases(b, nodes) for b in nodes}
    assert walk.of("0000:fe:00.0") is None


@pytest.mark.parametrize("bridges", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
def test_depth_limit(bridges: int) -> None:
    """A device behind MAX_DEPTH - 1 bridges is the deepest the bounded walk sees."""
    nodes = {"b0": PciNode(Rid(0, 0, 0), None, None, None)}
    for i in range(1, bridges):
        nodes[f"b{i}"] = PciNode(Rid(0, i % 256, i // 256), f"b{i - 1}", None, None)
    nodes["dev"] = PciNode(Rid(1, 0, 0), f"b{bridges - 1}", 0, None)
    walk = DmaAliases(nodes)
    got = walk.of("dev")
    assert got == _walk_one("dev", nodes)
    assert (got is not None) == (bridges < MAX_DEPTH)
    if got is not None:
        assert len(got) == bridges + 1  # its own RID, then each conventional bridge's
    # A bridge half way up is asked first: its memoized walk serves the device too.
    assert DmaAliases(nodes).of(f"b{bridges // 2}") == _walk_one(f"b{bridges // 2}", nodes)
