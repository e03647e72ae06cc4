"""Fuzzing the image decode path (io.read_image: what extraction, prepare and the web page all use).

Seeded mutations of small JPEG and PNG files, made here: truncations at random points, flipped
header bytes, huge (and merely larger) declared sizes in the SOF / IHDR headers, spliced garbage,
bytes appended after the end. Every file must either decode or raise InstanceSearchError with a one-line message naming
it: no other exception, no hang (each call is timed), and bounded memory (huge declared sizes are
refused from the header, before anything is allocated for them).
"""

from __future__ import annotations

import faulthandler
import resource
import struct
import sys
import time
import zlib

import cv2
import numpy as np

from instance_search import io as iio
from instance_search.errors import InstanceSearchError

SEED = 11
PER_BASE = 70          # 8 base images x 70 mutations = 560 files
MAX_CALL_S = 5.0       # one read_image call; the slowest seen is well under 0.5 s
MAX_GROWTH_MB = 600    # peak resident memory growth over the whole run


def _bases() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(SEED)
    colour = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (5, 5), 0)
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    rgba = np.dstack([colour, np.full(colour.shape[:2], 200, np.uint8)])

    def enc(ext, image, *flags):
        return ext, cv2.imencode(ext, image, list(flags))[1].tobytes()

    return [
        enc(".jpg", colour, cv2.IMWRITE_JPEG_QUALITY, 90),
        enc(".jpg", grey, cv2.IMWRITE_JPEG_QUALITY, 75),
        enc(".jpg", colour, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        enc(".jpg", colour, cv2.IMWRITE_JPEG_RST_INTERVAL, 4),
        enc(".png", colour),
        enc(".png", grey),
        enc(".png", rgba),
        enc(".png", (grey.astype(np.uint16) * 257)),
    ]


def _sof_offset(data: bytes) -> int | None:
    """Offset of the height field of the first SOF segment, walking the markers from SOI."""
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return i + 5
        i += 2 + length
    return None


def _declare(data: bytes, width: int, height: int) -> bytes:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        body = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
        return data[:12] + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF) + data[33:]
    at = _sof_offset(data)
    return data if at is None else data[:at] + struct.pack(">HH", height, width) + data[at + 4:]


def _mutate(rng: np.random.Generator, data: bytes) -> tuple[str, bytes]:
    kind = ["truncate", "flip", "huge", "large", "grown", "huge+truncate", "splice", "append"][int(rng.integers(8))]
    if kind == "truncate":
        return kind, data[: int(rng.integers(1, len(data)))]
    if kind == "flip":  # the headers: markers, segment lengths, sizes, tables, chunk fields
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, min(len(out), 700)))
            out[i] ^= int(rng.integers(1, 256))
        return kind, bytes(out)
    if kind == "huge":  # far over the limit: refused from the header
        return kind, _declare(data, int(rng.integers(15_000, 65_536)), int(rng.integers(15_000, 65_536)))
    if kind == "large":  # under the limit but far more pixels than the data holds
        side = int(rng.integers(2_000, 14_000))
        return kind, _declare(data, side, int(rng.integers(2_000, 14_000)))
    if kind == "grown":  # a few times the pixels the data holds: decoded with filler, or refused
        return kind, _declare(data, 96 * int(rng.integers(1, 9)), 64 * int(rng.integers(1, 9)))
    if kind == "huge+truncate":
        big = _declare(data, int(rng.integers(1_000, 65_536)), int(rng.integers(1_000, 65_536)))
        return kind, big[: int(rng.integers(1, len(big)))]
    if kind == "splice":
        i = int(rng.integers(0, len(data) - 1))
        n = int(rng.integers(1, 64))
        return kind, data[:i] + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + data[i + n:]
    return kind, data + rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()


def test_mutated_images_decode_or_give_one_line(tmp_path, capsys):
    rng = np.random.default_rng(SEED)
    files = []
    for b, (ext, data) in enumerate(_bases()):
        for k in range(PER_BASE):
            kind, mutated = _mutate(rng, data)
            path = tmp_path / f"fuzz_{b}_{k:03d}_{kind.replace('+', '_')}{ext}"
            path.write_bytes(mutated)
            files.append((kind, path))
    assert len(files) >= 500

    decoded, refused, slowest = 0, {}, 0.0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    faulthandler.dump_traceback_later(120, exit=True, file=sys.__stderr__)  # a real hang must not hang the suite
    try:
        for kind, path in files:
            for flags in (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE):  # extraction and the page / prepare
                start = time.perf_counter()
                try:
                    image = iio.read_image(path, flags)
                except InstanceSearchError as exc:
                    msg = str(exc)
                    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
                    refused[kind] = refused.get(kind, 0) + 1
                    if kind == "huge":
                        assert "too many pixels" in msg, msg
                else:
                    assert image.ndim in (2, 3) and image.size > 0 and image.size <= 3 * iio.MAX_PIXELS
                    decoded += 1
                took = time.perf_counter() - start
                slowest = max(slowest, took)
                assert took < MAX_CALL_S, f"{path.name}: {took:.1f} s"
    finally:
        faulthandler.cancel_dump_traceback_later()
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB on Linux
    total = decoded + sum(refused.values())
    with capsys.disabled():
        print(f"\nfuzz: {len(files)} files x 2 modes = {total} reads: {decoded} decoded, {sum(refused.values())} "
              f"refused ({', '.join(f'{k} {v}' for k, v in sorted(refused.items()))}); slowest {slowest:.3f} s, "
              f"peak memory +{growth_mb:.0f} MB")
    assert growth_mb < MAX_GROWTH_MB
    assert decoded > 0 and refused.get("huge") == sum(k == "huge" for k, _ in files) * 2
