"""Image files for tests of hostile input (shared by the data, captioning and perturbation tests)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_declaring(width: int, height: int) -> bytes:
    """A 140-byte PNG whose header declares ``width`` x ``height`` (its pixel data is for 4 x 4):
    what a decompression bomb looks like to a reader that trusts the header, without the gigabytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a valid header checksum
    return bytes(data)
