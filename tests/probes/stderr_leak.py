"""S6: copy everything readable under /input to stderr and stdout, then fail."""

import os
import sys

for root, _, files in os.walk("/input"):
    for name in files:
        with open(os.path.join(root, name), "rb") as handle:
            content = handle.read(4096).decode("utf-8", "replace")
        print(f"LEAK {name}: {content}", file=sys.stderr)
        print(f"LEAK {name}: {content}")
sys.exit(3)
