#!/usr/bin/env python3
"""Writes a synthetic CIFAR-10 set in the canonical binary format, to try the `cifar10` kind
without downloading CIFAR: DIR/cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin and
test_batch.bin, PER_FILE records each (a label byte, then 32x32 red, green and blue planes).
Class c is a noisy square of colour c on a noisy background at a random place, so a small CNN
can learn it; the accuracy it reaches says nothing about CIFAR-10 itself.

    python3 scripts/synthetic_cifar.py DIR [PER_FILE]      (default 1000; seeded, so reproducible)
"""
import os
import random
import sys

COLOURS = [(230, 40, 40), (40, 200, 40), (40, 40, 230), (230, 230, 40), (230, 40, 230),
           (40, 230, 230), (250, 140, 20), (140, 70, 20), (150, 150, 150), (20, 20, 20)]


def record(rng, label):
    side = rng.randint(10, 18)
    left, top = rng.randint(0, 32 - side), rng.randint(0, 32 - side)
    planes = []
    for channel in range(3):
        plane = bytearray(1024)
        for y in range(32):
            for x in range(32):
                inside = left <= x < left + side and top <= y < top + side
                base = COLOURS[label][channel] if inside else 110
                plane[32 * y + x] = max(0, min(255, base + rng.randint(-40, 40)))
        planes.append(bytes(plane))
    return bytes([label]) + b"".join(planes)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    folder = os.path.join(sys.argv[1], "cifar-10-batches-bin")
    per_file = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        with open(os.path.join(folder, name), "wb") as out:
            for index in range(per_file):
                out.write(record(rng, index % 10))
    print(f"{len(names)} files of {per_file} records in {folder}")


if __name__ == "__main__":
    main()
