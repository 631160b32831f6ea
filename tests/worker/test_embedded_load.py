"""R13: the embedded default (SQLite, server-less broker, workers writing results meanwhile) takes a burst of
uploads: 50 concurrent predictions uploads from 10 teams are answered 201 or 429 only, never 503, and the
storage holds exactly one file per submission created (a refused upload leaves nothing behind). A second
burst into a phase whose quota admits all of them is answered 201 throughout: more requests wait for
SQLite's write lock than the API has threads, and none may starve the request that holds it."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import running_server

pytestmark = pytest.mark.slow

TEAMS = 10
PER_TEAM = 5
DAILY_QUOTA = 3


def test_fifty_concurrent_uploads_are_201_or_429_and_leave_no_orphan_file(
    tmp_path: Path, small_set: Any, predictions_for: Any
) -> None:
    with running_server(tmp_path, MIDOG_REQUEUE_AFTER_S="2", MIDOG_RECONCILE_INTERVAL_S="1") as server:
        admin = server.organiser()
        with httpx.Client(base_url=server.base, timeout=60) as client:
            test_set = client.post(
                "/api/v1/admin/test-sets", json={"name": "small", "path": str(small_set.root)}, headers=admin
            ).json()
            challenge = client.post("/api/v1/admin/challenges", json={"slug": "c", "title": "C"}, headers=admin).json()
            phase, open_phase = (
                client.post(
                    f"/api/v1/admin/challenges/{challenge['id']}/phases",
                    json={
                        "slug": slug,
                        "title": slug,
                        "test_set_id": test_set["id"],
                        "daily_quota": quota,
                        "max_active_per_team": PER_TEAM,
                    },
                    headers=admin,
                ).json()
                for slug, quota in (("p", DAILY_QUOTA), ("open", PER_TEAM))
            )
            tokens = []
            for index in range(TEAMS):
                team = client.post(
                    "/api/v1/auth/register",
                    json={
                        "team_name": f"Team {index}",
                        "email": f"t{index}@example.org",
                        "password": "a-long-password",
                    },
                )
                assert team.status_code == 201, team.text
                tokens.append(team.json()["token"]["token"])

        files = [json.dumps(predictions_for(small_set, seed)).encode() for seed in range(TEAMS * PER_TEAM)]

        def upload(index: int, phase_id: int = phase["id"]) -> int:
            headers = {"Authorization": f"Bearer {tokens[index % TEAMS]}"}
            response = httpx.post(
                f"{server.base}/api/v1/phases/{phase_id}/submissions",
                headers=headers,
                files={"file": (f"p{index}.json", files[index])},
                timeout=120,
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=TEAMS * PER_TEAM) as pool:
            codes = list(pool.map(upload, range(TEAMS * PER_TEAM)))
        assert set(codes) <= {201, 429}, codes
        assert codes.count(201) == TEAMS * DAILY_QUOTA
        stored = sorted((server.data_dir / "storage" / "submissions").rglob("*.*"))
        listed = httpx.get(
            f"{server.base}/api/v1/admin/submissions", params={"limit": 1000}, headers=admin, timeout=30
        ).json()
        assert len(stored) == len(listed) == TEAMS * DAILY_QUOTA
        assert sorted(p.name for p in stored) == sorted(Path(s["file_path"]).name for s in listed)
        assert list((server.data_dir / "storage" / "tmp").glob("*.part")) == []
        # Every accepted submission is scored, one result each.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            board = httpx.get(f"{server.base}/api/v1/phases/{phase['id']}/leaderboard", timeout=30).json()
            if len(board["entries"]) == TEAMS:
                break
            time.sleep(0.5)
        assert len(board["entries"]) == TEAMS, server.logs()

        started = time.monotonic()
        codes = asyncio.run(burst(f"{server.base}/api/v1/phases/{open_phase['id']}/submissions", tokens, files))
        assert codes == [201] * (TEAMS * PER_TEAM), codes
        assert time.monotonic() - started < 60


async def burst(url: str, tokens: list[str], files: list[bytes]) -> list[int]:
    """Every file sent at once, each on a connection of its own (as many clients would)."""
    limits = httpx.Limits(max_connections=len(files))
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one(index: int) -> int:
            headers = {"Authorization": f"Bearer {tokens[index % len(tokens)]}"}
            response = await client.post(url, headers=headers, files={"file": (f"p{index}.json", files[index])})
            return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(len(files)))))
