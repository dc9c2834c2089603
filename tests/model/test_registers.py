"""CAP/ECAP/GSTS/RTADDR and table-entry decoding, checked against values derived by hand."""

from __future__ import annotations

from vtdlud.model.bitfield import decode_fields
from vtdlud.model.registers import (
    GSTS_FIELDS,
    RTADDR_FIELDS,
    decode_cap,
    decode_ecap,
    gsts_tes,
    rtaddr_is_scalable,
    rtaddr_root_table,
)
from vtdlud.model.tables import (
    ContextEntry,
    PasidEntry,
    RootEntry,
    SmContextEntry,
    bits_to_words,
    context_table_bit,
    words_to_bits,
)

A_LEGACY_CAP = 0x00D2008C22260286  # sysfs cap of capture a_legacy
A_LEGACY_ECAP = 0xF00F4A
B_SCALABLE_ECAP = 0x480080F00F4A


def test_cap_a_legacy() -> None:
    f = decode_cap(A_LEGACY_CAP)
    assert f["ndoms"] == 65536  # ND = 0x86 & 7 = 6 -> 1 << (4 + 2*6)
    assert f["afl"] is False and f["rwbf"] is False  # 0x86 = 1000_0110: bits 1, 2, 7 only
    assert f["plmr"] is False and f["phmr"] is False
    assert f["caching_mode"] is True  # bit 7
    assert f["sagaw"] == 2  # byte 1 = 0x02 -> bits 12:8 = 2 (39-bit, 3-level)
    assert f["mgaw"] == 39  # byte 2 = 0x26 -> bits 21:16 = 38, + 1
    assert f["zlr"] is False and f["isoch"] is False  # 0x26 >> 6 = 0
    assert f["fault_reg_offset"] == 0x220  # bits 33:24 = 0x22 | (0x8c & 3) << 8 = 0x22; * 16
    assert f["super_page_val"] == 3  # (0x8c >> 2) & 0xf = 3 -> 2 MiB and 1 GiB
    assert f["pgsel_inv"] is True  # 0x8c >> 7 = 1
    assert f["num_fault_regs"] == 1  # byte 5 = 0 -> 0 + 1
    assert f["max_amask_val"] == 18  # byte 6 = 0xd2 & 0x3f = 0x12
    assert f["write_drain"] is True and f["read_drain"] is True  # 0xd2 bits 6, 7
    assert f["fl1gp_support"] is False and f["pi_support"] is False
    assert f["fl5lp_support"] is False  # byte 7 = 0


def test_cap_rwbf_is_bit4() -> None:
    f = decode_cap(0x10)  # bit 4 alone
    assert f["rwbf"] is True and f["afl"] is False
    assert decode_cap(0x86)["rwbf"] is False  # bits 1, 2, 7 set; bit 4 clear


def test_ecap_a_legacy() -> None:
    f = decode_ecap(A_LEGACY_ECAP)
    # 0x4a = 0100_1010: bits 1 (QI), 3 (IR), 6 (PT)
    assert (f["coherent"], f["qis"], f["dev_iotlb_support"], f["ir_support"]) == (
        False,
        True,
        False,
        True,
    )
    assert f["eim_support"] is False and f["pass_through"] is True and f["sc_support"] is False
    assert f["iotlb_offset"] == 0xF0  # (0xf00f4a >> 8) & 0x3ff = 0xf; * 16
    assert f["max_handle_mask"] == 15  # (0xf00f4a >> 20) & 0xf
    assert f["smts"] is False and f["pasid"] is False and f["pss"] == 0


def test_ecap_b_scalable() -> None:
    f = decode_ecap(B_SCALABLE_ECAP)
    # bits 47:32 = 0x4800: bit 43 (0x0800) SMTS, bit 46 (0x4000) SLTS
    assert f["smts"] is True and f["slts"] is True and f["flts"] is False
    assert f["pasid"] is False  # bit 40 clear
    assert f["pss"] == 0  # (0x4800 >> 3) & 0x1f = 0
    assert f["srs"] is True  # low word 0x80f00f4a has bit 31


def test_gsts_and_rtaddr() -> None:
    g = decode_fields(GSTS_FIELDS, 0xC7000000)  # a_legacy GSTS: bits 31, 30, 26, 25, 24
    assert g["tes"] and g["rtps"] and g["qies"] and g["ires"] and g["irtps"]
    assert not (g["fls"] or g["afls"] or g["wbfs"] or g["cfis"])
    assert gsts_tes(0xC7000000) and not gsts_tes(0x47000000)
    r = decode_fields(RTADDR_FIELDS, 0x1B65400)  # b_scalable RTADDR: TTM bits = 0x400
    assert r["rta"] == 0x1B65000 and r["ttm"] == 1 and r["smt"] is True
    assert rtaddr_root_table(0x1B65400) == 0x1B65000 and rtaddr_is_scalable(0x1B65400)
    assert not rtaddr_is_scalable(0x1A49000)


def test_entries() -> None:
    # a_legacy 00:05.0: root 0x0:0x1a53001, context 0x901:0x2933001
    root = RootEntry(lo=0x1A53001, hi=0)
    assert root.lctp_present and not root.uctp_present and root.fields()["lctp"] == 0x1A53000
    ctx = ContextEntry(lo=0x2933001, hi=0x901)
    assert ctx.present and ctx.did == 9 and ctx.tt == 0  # 0x901 >> 8 = 9; lo bits 3:2 = 0
    assert ctx.fields()["aw"] == 1 and ctx.fields()["slptptr"] == 0x2933000  # 0x901 & 7 = 1
    # b_scalable 00:00.0: context 0x0:0x1a4b401, PASID 0x0:0x2:0x1a6a089
    sm = SmContextEntry(lo=0x1A4B401, hi=0)
    assert sm.present and sm.pasid_dir_ptr == 0x1A4B000
    assert sm.fields()["pdts"] == 2  # 0x401 >> 9 & 7 = 2 -> 1 << 9 = 512 dir entries
    assert sm.pasid_dir_entries == 512
    pe = PasidEntry(val0=0x1A6A089, val1=0x2, val2=0)
    assert pe.present and pe.pgtt == 2 and pe.did == 2  # 0x089 >> 6 & 7 = 2 (second-level)
    assert pe.fields()["aw"] == 2  # 0x089 >> 2 & 7 = 2 (48-bit, 4-level)


def test_bitmap_formula() -> None:
    assert context_table_bit(0, 0) == 0
    assert context_table_bit(0, 0x80) == 1
    assert context_table_bit(5, 0x08) == 10  # 5 << 1
    assert context_table_bit(0xFF, 0xFF) == 511
    words = bits_to_words({0, 1, 63, 64, 511})
    assert words[0] == (1 << 0) | (1 << 1) | (1 << 63) and words[1] == 1 and words[7] == 1 << 63
    assert words_to_bits(words) == [0, 1, 63, 64, 511]
