"""Prove that two checkouts serve the same seeded boards byte for byte.

    .venv/bin/python scripts/compare_board_bytes.py OLD_CHECKOUT NEW_CHECKOUT

Each checkout is imported in its own interpreter (this venv's packages, the checkout's app/ and worker/ first
on the path), which seeds the page tests' challenge (tests/pages/seed.py of NEW_CHECKOUT for both, so the two
runs seed the same rows) into a fresh SQLite database under a temporary directory, with the clock frozen so
that timestamps cannot differ, renders the boards as the rebuild task does and requests, without serving, the
leaderboard JSON and CSV, the analysis JSON and its CSV tables of both phases, and the public HTML pages of the
board, the analysis and each submission. The bodies are compared byte for byte; the script prints one line per
request and exits 1 on any difference. Writes only under a temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DUMP = r"""
import json, os, sys
from datetime import UTC, datetime
from pathlib import Path

tree, out_dir, seed_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
import app
assert Path(app.__file__).resolve().is_relative_to(tree.resolve()), f"imported {app.__file__}, not {tree}"

import app.tables.base as base
FIXED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

class Frozen(datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED if tz is not None else FIXED.replace(tzinfo=None)

base.datetime = Frozen  # utcnow(), and with it every column default, reads the frozen clock

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.db import make_engine
from app.main import create_app
from app.tables import Base
from app.settings import Settings

settings = Settings(data_dir=out_dir / "data", database_url=f"sqlite:///{out_dir / 'board.sqlite3'}")
engine = make_engine(settings.database_url, settings=settings)
Base.metadata.create_all(engine)
sys.path.insert(0, str(seed_file.parent))
from seed import seed

with Session(engine) as session:
    seeded = seed(session)
    session.commit()
paths = []
for phase_id in (seeded.public_phase_id, seeded.hidden_phase_id):
    paths += [
        f"/api/v1/phases/{phase_id}/leaderboard",
        f"/api/v1/phases/{phase_id}/leaderboard.csv",
        f"/api/v1/phases/{phase_id}/analysis",
        f"/phases/{phase_id}/leaderboard",
        f"/phases/{phase_id}/analysis",
    ]
from app.leaderboard.analysis_tables import TABLES
paths += [f"/api/v1/phases/{seeded.public_phase_id}/analysis/{t}.csv" for t in TABLES]
paths += [f"/submissions/{i}" for i in sorted(seeded.submission_ids.values())]
bodies = {}
with TestClient(create_app(settings)) as client:
    for path in paths:
        r = client.get(path)
        bodies[path] = {"status": r.status_code, "type": r.headers.get("content-type"), "body": r.text}
(out_dir / "bodies.json").write_text(json.dumps(bodies), encoding="utf-8")
"""


def dump(tree: Path, seed_file: Path, work: Path) -> dict[str, dict[str, object]]:
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("MIDOG_")}
    subprocess.run([sys.executable, "-c", DUMP, str(tree), str(work), str(seed_file)], cwd=work, env=env, check=True)
    bodies: dict[str, dict[str, object]] = json.loads((work / "bodies.json").read_text(encoding="utf-8"))
    return bodies


def main() -> int:
    old, new = (Path(arg).resolve() for arg in sys.argv[1:3])
    seed_file = new / "tests" / "pages" / "seed.py"
    with tempfile.TemporaryDirectory(prefix="board-bytes-") as tmp:
        before = dump(old, seed_file, Path(tmp) / "old")
        after = dump(new, seed_file, Path(tmp) / "new")
    differing = 0
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        same = a == b
        differing += not same
        digest = hashlib.sha256(str((a or {}).get("body", "")).encode()).hexdigest()[:12]
        size = len(str((a or {}).get("body", "")).encode())
        status = (a or {}).get("status")
        print(f"{'same' if same else 'DIFFERENT':9} {status} {size:7d} B sha256:{digest} {path}")
    print(f"{len(before)} requests, {differing} differing")
    return 1 if differing or not before else 0


if __name__ == "__main__":
    sys.exit(main())
