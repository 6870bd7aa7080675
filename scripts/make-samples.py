#!/usr/bin/env python3
"""Writes the first N Fashion-MNIST test images as PNG files (standard
library only), named <index>-<label>.png: the real images that
scripts/main.sh classifies through the server.

Usage: python3 scripts/make-samples.py [N] [OUT_DIR]
"""
import gzip
import os
import struct
import sys
import zlib

SRC = "/usr/share/datasets/fashion-mnist"
NAMES = ["t-shirt-top", "trouser", "pullover", "dress", "coat",
         "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def read(name):
    for cand in (name, name + ".gz"):
        path = os.path.join(SRC, cand)
        if os.path.exists(path):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                return f.read()
    sys.exit(f"{name} not found in {SRC} (apt install dataset-fashion-mnist)")


def png(width, height, gray):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\x00" + gray[y * width:(y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    out = sys.argv[2] if len(sys.argv) > 2 else "samples/fashion-mnist"
    images = read("t10k-images-idx3-ubyte")[16:]
    labels = read("t10k-labels-idx1-ubyte")[8:]
    os.makedirs(out, exist_ok=True)
    for i in range(n):
        pixels = images[i * 784:(i + 1) * 784]
        path = os.path.join(out, f"{i:02d}-{NAMES[labels[i]]}.png")
        with open(path, "wb") as f:
            f.write(png(28, 28, pixels))
        print(path)


if __name__ == "__main__":
    main()
