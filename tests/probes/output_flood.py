"""S5: write into /output until refused, as one big file or as many small files; report what was written."""

import json
import os
import sys


def main(mode: str, limit: int) -> None:
    written, files, error = 0, 0, None
    chunk = b"\xab" * 65536
    try:
        if mode == "big":
            with open("/output/flood.bin", "wb", buffering=0) as handle:
                while written < limit:
                    written += handle.write(chunk)
                    files = 1
        else:
            while written < limit:
                with open(f"/output/flood-{files:06d}.bin", "wb", buffering=0) as handle:
                    written += handle.write(chunk[:4096])
                files += 1
    except OSError as exc:
        error = os.strerror(exc.errno or 0)
    print(json.dumps({"written": written, "files": files, "error": error}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
