"""S2: look for files that must be invisible, try to write everywhere, dump the environment.

Arguments: paths that must not exist inside the sandbox. Prints JSON with the paths found, the
directories a file could be created in, and the environment.
"""

import json
import os
import sys

WRITE_TARGETS = [
    "/",
    "/input",
    "/output",
    "/tmp",
    "/dev/shm",
    "/usr",
    "/etc",
    "/home",
    "/root",
    "/var",
    "/run",
    "/probes",
    "/proc/sys/kernel",
]


def writable(directory: str) -> bool:
    path = os.path.join(directory, f".probe-{os.getpid()}")
    try:
        with open(path, "w") as handle:
            handle.write("x")
    except OSError:
        return False
    os.unlink(path)
    return True


def main(argv: list[str]) -> None:
    found = [p for p in argv if os.path.lexists(p)]
    input_files = []
    for root, _, files in os.walk("/input"):
        input_files += [os.path.join(root, f) for f in files]
    modified_input = []
    for path in input_files:
        try:
            with open(path, "a") as handle:
                handle.write("tampered")
            modified_input.append(path)
        except OSError:
            pass
    print(
        json.dumps(
            {
                "found": found,
                "writable": [d for d in WRITE_TARGETS if os.path.isdir(d) and writable(d)],
                "input_files": input_files,
                "modified_input": modified_input,
                "environ": dict(os.environ),
                "uid": os.getuid(),
                "gid": os.getgid(),
                "euid": os.geteuid(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
