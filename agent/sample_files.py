"""Tiny but structurally valid JPEG, PDF, TIFF and DICOM files for the synthetic practice.

Each takes a tag so files differ (content addressing must see distinct files), and each is built
from its format's rules rather than copied bytes, so the magic-byte sniffer in the agent meets the
real headers.
"""

from __future__ import annotations

import struct


def jpeg(tag: str) -> bytes:
    """A baseline 8x8 greyscale JPEG with one-code Huffman tables and a comment carrying the tag."""
    soi = b"\xff\xd8"
    comment = tag.encode("ascii")
    com = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 8, 8, 1) + bytes([1, 0x11, 0])
    # One code of length 1 per table: DC symbol 0 (difference 0), AC symbol 0x00 (end of block).
    bits = bytes([1] + [0] * 15)
    dht_dc = b"\xff\xc4" + struct.pack(">H", 2 + 1 + 16 + 1) + b"\x00" + bits + b"\x00"
    dht_ac = b"\xff\xc4" + struct.pack(">H", 2 + 1 + 16 + 1) + b"\x10" + bits + b"\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([1, 0x00, 0, 63, 0])
    scan = bytes([0b00111111])  # DC '0', EOB '0', padded with ones
    return soi + com + dqt + sof0 + dht_dc + dht_ac + sos + scan + b"\xff\xd9"


def pdf(tag: str) -> bytes:
    """A one-page PDF 1.4 with a correct cross-reference table."""
    text = tag.replace("\\", "").replace("(", "").replace(")", "")
    stream = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def tiff(tag: str) -> bytes:
    """A 1x1 8-bit greyscale baseline TIFF (little endian) with the tag as ImageDescription."""
    description = tag.encode("ascii") + b"\x00"
    entries = 9
    ifd_offset = 8
    ifd_size = 2 + entries * 12 + 4
    desc_offset = ifd_offset + ifd_size
    pixel_offset = desc_offset + len(description)
    header = b"II*\x00" + struct.pack("<I", ifd_offset)

    def entry(tag_id: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag_id, kind, count, value)

    ifd = struct.pack("<H", entries) + b"".join([
        entry(256, 3, 1, 1),  # ImageWidth
        entry(257, 3, 1, 1),  # ImageLength
        entry(258, 3, 1, 8),  # BitsPerSample
        entry(259, 3, 1, 1),  # Compression: none
        entry(262, 3, 1, 1),  # Photometric: black is zero
        entry(270, 2, len(description), desc_offset),  # ImageDescription
        entry(273, 4, 1, pixel_offset),  # StripOffsets
        entry(278, 3, 1, 1),  # RowsPerStrip
        entry(279, 4, 1, 1),  # StripByteCounts
    ]) + struct.pack("<I", 0)
    return header + ifd + description + bytes([sum(tag.encode()) % 256])


def dicom(tag: str) -> bytes:
    """A header-only DICOM Part 10 file: preamble, DICM, and the file meta group (explicit VR LE)."""

    def element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\x00"
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            return struct.pack("<HH", group, elem) + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
        return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value

    digits = "".join(str(ord(c) % 10) for c in tag)[:30] or "0"
    body = b"".join([
        element(0x0002, 0x0001, b"OB", b"\x00\x01"),
        element(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.1.3"),  # Digital Intra-Oral X-Ray
        element(0x0002, 0x0003, b"UI", f"2.25.{digits}".encode()),
        element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1"),  # Explicit VR Little Endian
    ])
    group_length = element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body


def sniff_media_type(head: bytes) -> str:
    """The media type from magic bytes (dentrix.md §3.11: never trust the file extension)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "application/dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return "application/octet-stream"
