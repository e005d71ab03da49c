"""Replace a string variable in a Go executable, such as the version set with `-X` at link time.

A Go string variable is a header of two 8-byte words in the data segment:
a pointer to the bytes and their length. Debian links caddy with
`-X ...CustomVersion=2.6.2`, so the header points to "2.6.2" in the
read-only data. To print a longer version (upstream prints e.g.
"v2.6.3 h1:..."), the new bytes go into the unused file gap after the
read-only segment that contains the old string. That segment grows to cover
them, and the header is pointed at them. Nothing else in the binary moves.

Only non-PIE little-endian ELF64 executables are handled (Debian 12's caddy
on amd64 and arm64): in a PIE the header would be fixed up by a relocation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .process import StandinError

PT_LOAD = 1
PF_W = 2
ET_EXEC = 2
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")


@dataclass
class _Segment:
    index: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int

    def contains_offset(self, offset: int) -> bool:
        return self.offset <= offset < self.offset + self.filesz


def _load_segments(binary: bytes) -> tuple[int, int, list[_Segment]]:
    if binary[:4] != b"\x7fELF" or binary[4] != 2 or binary[5] != 1:
        raise StandinError("not a little-endian 64-bit ELF file")
    (e_type,) = struct.unpack_from("<H", binary, 0x10)
    if e_type != ET_EXEC:
        raise StandinError("not a position-dependent executable (ELF type EXEC)")
    (phoff,) = struct.unpack_from("<Q", binary, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", binary, 0x36)
    segments = []
    for index in range(phnum):
        fields = PROGRAM_HEADER.unpack_from(binary, phoff + index * phentsize)
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = fields
        if p_type == PT_LOAD:
            segments.append(_Segment(index, p_flags, p_offset, p_vaddr, p_filesz, p_memsz))
    return phoff, phentsize, segments


def _only_offset(binary: bytes, needle: bytes, what: str) -> int:
    first = binary.find(needle)
    if first == -1 or binary.find(needle, first + 1) != -1:
        count = binary.count(needle)
        raise StandinError(f"found {what} {count} times in the binary, expected exactly once")
    return first


def replace_go_string(binary: bytes, old: str, new: str) -> bytes:
    """Return `binary` with the Go string variable whose value is `old` set to `new`.

    Raises StandinError when `old` or its string header does not occur
    exactly once, or the read-only segment has no room after it for `new`.
    """
    phoff, phentsize, segments = _load_segments(binary)
    old_bytes, new_bytes = old.encode(), new.encode()
    old_offset = _only_offset(binary, old_bytes, f"the string {old!r}")
    rodata = next((s for s in segments if s.contains_offset(old_offset)), None)
    # amd64 has a read-only segment for data; arm64 keeps read-only data in the text segment.
    if rodata is None or rodata.flags & PF_W or rodata.filesz != rodata.memsz:
        raise StandinError(f"the string {old!r} is not in a read-only segment")
    old_address = rodata.vaddr + old_offset - rodata.offset
    header_offset = _only_offset(
        binary, struct.pack("<QQ", old_address, len(old_bytes)), f"a string header for {old!r}"
    )
    if not any(s.flags & PF_W and s.contains_offset(header_offset) for s in segments):
        raise StandinError(f"the string header for {old!r} is not in a writable segment")

    # Place the new bytes 8-byte aligned right after the segment's end, where
    # neither the file nor the address space contains anything else.
    start = (rodata.filesz + 7) & ~7
    end = start + len(new_bytes)
    new_offset, new_address = rodata.offset + start, rodata.vaddr + start
    for other in segments:
        if other is rodata:
            continue
        file_overlap = other.offset < rodata.offset + end and rodata.offset + start < (
            other.offset + other.filesz
        )
        memory_overlap = other.vaddr < rodata.vaddr + end and rodata.vaddr + start < (
            other.vaddr + other.memsz
        )
        if file_overlap or memory_overlap:
            raise StandinError(f"no room after the read-only segment for {len(new_bytes)} bytes")
    if rodata.offset + end > len(binary) or any(binary[new_offset : rodata.offset + end]):
        raise StandinError("the gap after the read-only segment is not empty")

    patched = bytearray(binary)
    patched[new_offset : new_offset + len(new_bytes)] = new_bytes
    struct.pack_into("<QQ", patched, header_offset, new_address, len(new_bytes))
    header_at = phoff + rodata.index * phentsize
    # p_filesz and p_memsz are the 6th and 7th fields of the program header.
    struct.pack_into("<QQ", patched, header_at + 32, end, end)
    return bytes(patched)
