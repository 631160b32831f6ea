"""The first cause of a failed container run, read from its log tail, as a line a participant can act on.

Two forms of each cause:
- `hidden`: a line from a fixed vocabulary, the same for every case and every run: nothing in it is chosen
  by the container (no module name, no path, no case name, no exit status). Hidden test phases show only
  these; which of them appears is the one thing the code controls, a few bits per submission.
- `open`: the same cause with the detail that makes it actionable (`ModuleNotFoundError: No module named
  'timm'`), for phases whose organiser lets participants read their logs, and for organisers always.
The first matching line of the log wins (the first error is the cause, later ones are consequences).

Imports the stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    hidden: str
    open: str


# (pattern on one log line, the fixed line); the open line quotes the matched text, shortened.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"ModuleNotFoundError: No module named '?([\w.]{1,100})'?"),
        "a Python module is missing (ModuleNotFoundError): install it in the image for the image's USER",
    ),
    (
        re.compile(r"ImportError: .{0,200}"),
        "a Python import failed (ImportError): check the image's packages and their versions",
    ),
    (
        re.compile(r"(torch\.(cuda\.)?OutOfMemoryError|CUDA out of memory).{0,200}"),
        "the GPU ran out of memory (CUDA out of memory): use smaller batches or tiles",
    ),
    (
        # torch.load of weights saved on a GPU, or .cuda(), where the run has no GPU (a CPU phase or worker)
        re.compile(
            r"(Attempting to deserialize object on a CUDA device|Found no NVIDIA driver|"
            r"Torch not compiled with CUDA enabled|No CUDA GPUs are available).{0,200}"
        ),
        "the program needs a CUDA GPU and this run has none: fall back to the CPU when "
        "torch.cuda.is_available() is False (torch.load with map_location)",
    ),
    (re.compile(r"\bMemoryError\b.{0,200}"), "the program ran out of memory (MemoryError)"),
    (
        re.compile(r"FileNotFoundError: .{0,200}"),
        "a file the program needs was not found (FileNotFoundError): check paths under /input and /opt/ml/model",
    ),
    (
        re.compile(r"PermissionError: .{0,200}"),
        "the program was refused access to a file (PermissionError): write only to /output, /tmp, HOME, "
        "/opt/ml/model and /opt/ml/checkpoints",
    ),
    (
        re.compile(r"(executable file not found|exec format error|no such file or directory: OCI).{0,200}"),
        "the image's command could not be started (not found or not executable for the image's USER)",
    ),
)


def first_cause(log: str) -> Cause | None:
    """The cause named by the first line of `log` that matches a rule, or None."""
    for line in log.splitlines():
        for pattern, fixed in _RULES:
            found = pattern.search(line)
            if found:
                return Cause(hidden=f"the program failed: {fixed}", open=found.group(0)[:300])
    return None
