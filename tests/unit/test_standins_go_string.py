"""Replacing a Go string variable in an ELF executable (the Caddy stand-in's version).

`go_executable` builds the minimal ELF64 executables these tests and
test_standins_caddy.py patch.
"""

from __future__ import annotations

import struct

import pytest

from ops.sandbox.standins.go_string import replace_go_string
from ops.sandbox.standins.process import StandinError

RODATA_OFFSET, RODATA_ADDRESS = 0x1000, 0x401000
DATA_OFFSET, DATA_ADDRESS = 0x3000, 0x603000
STRING_AT = 0x10  # offset of the string inside the read-only segment
HEADER_AT = 0x20  # offset of the Go string header inside the data segment
SEGMENT_SIZE = 0x100
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")


def go_executable(
    machine: int = 0x3E,
    value: str = "2.6.2",
    *,
    elf_type: int = 2,
    data_offset: int = DATA_OFFSET,
    padding: int = 0x1000,
) -> bytes:
    """Return an ELF executable with a Go string variable set to `value`.

    The read-only segment contains the bytes, the writable one the header
    (pointer, length). `data_offset` moves the writable segment, e.g. right
    after the read-only one to leave no room for a longer value.
    """
    size = data_offset + SEGMENT_SIZE + padding
    image = bytearray(size)
    image[:4] = b"\x7fELF"
    image[4], image[5], image[6] = 2, 1, 1
    struct.pack_into("<HHI", image, 0x10, elf_type, machine, 1)
    struct.pack_into("<Q", image, 0x20, 0x40)
    struct.pack_into("<HH", image, 0x36, PROGRAM_HEADER.size, 2)
    data_address = DATA_ADDRESS + data_offset - DATA_OFFSET
    PROGRAM_HEADER.pack_into(
        image, 0x40, 1, 4, RODATA_OFFSET, RODATA_ADDRESS, RODATA_ADDRESS,
        SEGMENT_SIZE, SEGMENT_SIZE, 0x1000,
    )  # fmt: skip
    PROGRAM_HEADER.pack_into(
        image, 0x40 + PROGRAM_HEADER.size, 1, 6, data_offset, data_address, data_address,
        SEGMENT_SIZE, SEGMENT_SIZE * 2, 0x1000,
    )  # fmt: skip
    encoded = value.encode()
    image[RODATA_OFFSET + STRING_AT : RODATA_OFFSET + STRING_AT + len(encoded)] = encoded
    struct.pack_into(
        "<QQ", image, data_offset + HEADER_AT, RODATA_ADDRESS + STRING_AT, len(encoded)
    )
    return bytes(image)


def read_go_string(binary: bytes, data_offset: int = DATA_OFFSET) -> str:
    """Return the value the Go string header of `go_executable` points to, read by address."""
    address, length = struct.unpack_from("<QQ", binary, data_offset + HEADER_AT)
    offset = RODATA_OFFSET + address - RODATA_ADDRESS
    return binary[offset : offset + length].decode()


def segment_sizes(binary: bytes, index: int) -> tuple[int, int]:
    """Return p_filesz and p_memsz of program header `index`."""
    fields = PROGRAM_HEADER.unpack_from(binary, 0x40 + index * PROGRAM_HEADER.size)
    return fields[5], fields[6]


def test_longer_value_placed_after_segment():
    patched = replace_go_string(go_executable(), "2.6.2", "v2.6.3 h1:stand-in")

    assert read_go_string(patched) == "v2.6.3 h1:stand-in"
    assert segment_sizes(patched, 0) == (SEGMENT_SIZE + len("v2.6.3 h1:stand-in"),) * 2
    assert len(patched) == len(go_executable())


def test_old_bytes_and_other_segments_untouched():
    original = go_executable()

    patched = replace_go_string(original, "2.6.2", "v2.6.3 h1:x")

    assert b"2.6.2" in patched[RODATA_OFFSET : RODATA_OFFSET + SEGMENT_SIZE]
    assert segment_sizes(patched, 1) == segment_sizes(original, 1)


def test_shorter_value_also_works():
    patched = replace_go_string(go_executable(value="2.6.20"), "2.6.20", "v2")

    assert read_go_string(patched) == "v2"


@pytest.mark.parametrize(
    ("binary", "old", "message"),
    [
        (go_executable(value="2.6.2") + b"2.6.2", "2.6.2", "found the string '2.6.2' 2 times"),
        (go_executable(), "9.9.9", "found the string '9.9.9' 0 times"),
        (go_executable(elf_type=3), "2.6.2", "not a position-dependent executable"),
        (go_executable(data_offset=RODATA_OFFSET + SEGMENT_SIZE), "2.6.2", "no room"),
        (b"#!/bin/sh\n", "2.6.2", "not a little-endian 64-bit ELF"),
    ],
)
def test_unpatchable_binaries_rejected(binary: bytes, old: str, message: str):
    with pytest.raises(StandinError, match=message):
        replace_go_string(binary, old, "v2.6.3 h1:stand-in")


def test_missing_header_rejected():
    binary = bytearray(go_executable())
    binary[0x3020:0x3030] = bytes(16)

    with pytest.raises(StandinError, match="string header"):
        replace_go_string(bytes(binary), "2.6.2", "v2.6.3")


def test_nonempty_gap_rejected():
    binary = bytearray(go_executable())
    binary[RODATA_OFFSET + SEGMENT_SIZE + 4] = 0x90

    with pytest.raises(StandinError, match="not empty"):
        replace_go_string(bytes(binary), "2.6.2", "v2.6.3 h1:stand-in")
