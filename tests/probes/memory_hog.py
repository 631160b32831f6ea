"""S4: allocate and touch memory in 8 MiB steps until the sandbox stops it; report progress on stdout."""

import sys

held = []
while True:
    block = bytearray(8 * 1024 * 1024)
    block[::4096] = b"\x01" * len(block[::4096])
    held.append(block)
    print(f"{len(held) * 8} MiB", flush=True)
    if len(held) * 8 > int(sys.argv[1]):
        print("limit not enforced", flush=True)
        sys.exit(0)
