"""Draw the extension icon, icon.png (512x512 RGBA), with the standard library only.

    python scripts/make_icon.py

A rounded square in a teal-to-indigo gradient with two white chevrons ("run forward"). Drawn from
signed distances, so edges are anti-aliased without an imaging library.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

SIZE = 512
TOP_LEFT, BOTTOM_RIGHT = (20, 184, 166), (79, 70, 229)  # teal, indigo


def segment_distance(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def rounded_square_distance(px: float, py: float, half: float, radius: float) -> float:
    qx, qy = abs(px - SIZE / 2) - (half - radius), abs(py - SIZE / 2) - (half - radius)
    return math.hypot(max(qx, 0.0), max(qy, 0.0)) + min(max(qx, qy), 0.0) - radius


def coverage(distance: float) -> float:
    """Fraction of a pixel inside a shape whose edge is `distance` away (negative inside)."""
    return max(0.0, min(1.0, 0.5 - distance))


def pixel(x: int, y: int) -> bytes:
    px, py = x + 0.5, y + 0.5
    inside = coverage(rounded_square_distance(px, py, 240, 96))
    if inside == 0:
        return b"\0\0\0\0"
    t = (px + py) / (2 * SIZE)
    r, g, b = (round(a + (c - a) * t) for a, c in zip(TOP_LEFT, BOTTOM_RIGHT, strict=True))
    chevrons = 0.0
    for shift in (-70, 70):
        tip, top, bottom = (312 + shift, 256), (202 + shift, 146), (202 + shift, 366)
        d = min(segment_distance(px, py, *top, *tip), segment_distance(px, py, *bottom, *tip)) - 34
        chevrons = max(chevrons, coverage(d))
    r, g, b = (round(c + (255 - c) * chevrons) for c in (r, g, b))
    return bytes((r, g, b, round(255 * inside)))


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


if __name__ == "__main__":
    rows = [b"".join(pixel(x, y) for x in range(SIZE)) for y in range(SIZE)]
    target = Path(__file__).resolve().parent.parent / "icon.png"
    target.write_bytes(png(SIZE, SIZE, rows))
    print(f"wrote {target}")
