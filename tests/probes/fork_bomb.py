"""S3: fork until refused (children sleep), report how many forks succeeded and the first error.

Argument: the number of forks to attempt. The children are left running: the sandbox must clean up.
"""

import json
import os
import sys
import time


def main(attempts: int) -> None:
    started, error = 0, None
    for _ in range(attempts):
        try:
            pid = os.fork()
        except OSError as exc:
            error = exc.__class__.__name__ + ": " + os.strerror(exc.errno or 0)
            break
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        started += 1
    print(json.dumps({"started": started, "error": error}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
