#!/usr/bin/python3
"""Host-side known-answer check for the envcrypt target.

Usage: xts_known_answer.py PARAMS IMAGE

PARAMS is what the guest's test_known_answer.sh wrote (key=value lines):
key_hex, sector_size, dev_offset (512-byte sectors), length (512-byte
sectors) and data (plaintext file, relative to PARAMS).  IMAGE is the raw
virtio-blk image the guest wrote through the target.

The expected ciphertext is computed here, independently of the kernel, with
python3-cryptography (OpenSSL): AES-256-XTS, one XTS data unit per
sector_size bytes, tweak = plain64 IV = the number of the unit's first
512-byte sector counted from the start of the target (not of the device),
little-endian in the first 8 of 16 bytes.  The image must hold exactly that
at dev_offset, and zeros in the guard band right before and after it (the
image starts all zero), which proves the offset and length were honoured.

Prints one line of evidence; exit status 0 if the bytes match, 1 if not.
"""

import os
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SECTOR = 512
GUARD = 4096


def read_params(path):
    params = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                params[name] = value
    return params


def plain64_iv(sector):
    return sector.to_bytes(8, "little") + bytes(8)


def encrypt(key, sector_size, plaintext):
    units = []
    for start in range(0, len(plaintext), sector_size):
        iv = plain64_iv(start // SECTOR)
        encryptor = Cipher(algorithms.AES(key), modes.XTS(iv)).encryptor()
        units.append(encryptor.update(plaintext[start:start + sector_size]) + encryptor.finalize())
    return b"".join(units)


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    params_path, image_path = sys.argv[1:]
    params = read_params(params_path)
    key = bytes.fromhex(params["key_hex"])
    sector_size = int(params["sector_size"])
    offset = int(params["dev_offset"]) * SECTOR
    length = int(params["length"]) * SECTOR
    with open(os.path.join(os.path.dirname(params_path), params["data"]), "rb") as f:
        plaintext = f.read()
    what = (f"sector_size {sector_size}, dev_offset {offset // SECTOR}, "
            f"{length} bytes, image {image_path}")
    if len(key) != 64 or len(plaintext) != length or length % sector_size:
        print(f"bad parameters: key {len(key)} bytes, data {len(plaintext)} bytes, {what}")
        return 1

    expected = encrypt(key, sector_size, plaintext)
    with open(image_path, "rb") as f:
        f.seek(offset - GUARD)
        before = f.read(GUARD)
        seen = f.read(length)
        after = f.read(GUARD)

    if seen != expected:
        at = first_difference(seen, expected)
        print(f"ciphertext differs from AES-256-XTS plain64 at byte {at} of the target "
              f"(data unit {at // sector_size}): expected {expected[at:at + 16].hex()} "
              f"seen {seen[at:at + 16].hex()}; {what}")
        if seen == plaintext:
            print("the image holds the plaintext: nothing was encrypted")
        return 1
    if before.count(0) != GUARD or after.count(0) != GUARD:
        print(f"bytes outside the target changed (guard bands of {GUARD} bytes before/after "
              f"are not all zero); {what}")
        return 1
    print(f"ciphertext equals AES-256-XTS plain64; {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
