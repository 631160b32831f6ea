"""The HTML pages in-process (both database backends): numbers match the leaderboard JSON, hidden phases
render no score, the leaderboard page costs one SQL statement, pages are accessible by construction."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).parent))

from seed import ENTRIES, HIDDEN_F1, SCANNERS, Seeded

from app.main import create_app
from app.settings import Settings


class Cells(HTMLParser):
    """Collects the cells of the leaderboard table and the chart's circles."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.circles: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self._in_body = False
        self._cell: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and a.get("id") == "leaderboard":
            self._in_body = False
        if tag == "tbody":
            self._in_body = True
        if tag == "th" and not self._in_body and "scope" in a:
            self.headers.append(a)
        if tag == "tr" and self._in_body and "data-submission" in a:
            self.rows.append({"submission": int(a["data-submission"]), "cells": {}})
        if tag in {"td", "th"} and self._in_body and self.rows and "data-key" in a:
            key = a["data-key"] + (":" + a["data-group"] if "data-group" in a else "")
            self._cell = {"key": key, "sort": a.get("data-sort", ""), "text": ""}
        if tag == "circle":
            self.circles.append(a)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._cell is not None:
            self.rows[-1]["cells"][self._cell["key"]] = self._cell
            self._cell = None
        if tag == "tbody":
            self._in_body = False


@pytest.fixture
def client(tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with TestClient(create_app(settings, session_factory=session_factory)) as c:
        yield c


def test_leaderboard_page_matches_json(client: TestClient, seeded: Seeded) -> None:
    board = client.get(f"/api/v1/phases/{seeded.public_phase_id}/leaderboard").json()
    page = client.get(f"/phases/{seeded.public_phase_id}/leaderboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    parsed = Cells()
    parsed.feed(page.text)
    assert board["group_labels"] == list(SCANNERS)
    by_id = {e["submission_id"]: e for e in board["entries"]}
    assert [r["submission"] for r in parsed.rows] == [e["submission_id"] for e in board["entries"]]
    assert len(parsed.rows) == len(ENTRIES)
    for row in parsed.rows:
        entry = by_id[row["submission"]]
        cells = row["cells"]
        assert cells["f1"]["text"].startswith(f"{entry['f1']:.3f}")
        assert f"[{entry['f1_ci_low']:.3f}, {entry['f1_ci_high']:.3f}]" in cells["f1"]["text"]
        for label in SCANNERS:
            assert cells[f"group-f1:{label}"]["text"] == f"{entry['groups'][label]['f1']:.3f}"
        worst = min(entry["groups"][g]["f1"] for g in SCANNERS)
        assert cells["worst"]["text"] == f"{worst:.3f}"
        assert cells["ap"]["text"] == f"{entry['ap']:.3f}"
        robustness = entry["rank_robustness"]  # none for baselines, which hold no rank to keep
        assert (entry["rank"] is None) == (robustness is None)
        assert cells["robustness"]["text"] == ("–" if robustness is None else f"{robustness * 100:.0f}%")
    # one chart point per entry and scanner, carrying the same F1
    assert len(parsed.circles) == len(ENTRIES) * len(SCANNERS)
    chart = {(c["data-group"], c["data-f1"]) for c in parsed.circles}
    for entry in board["entries"]:
        for label in SCANNERS:
            assert (label, f"{entry['groups'][label]['f1']:.3f}") in chart
    # baselines are marked and unranked
    baseline_rows = re.findall(r'<tr data-submission="(\d+)" class="baseline">', page.text)
    assert [int(x) for x in baseline_rows] == [seeded.submission_ids["Organisers"]]
    # every header cell is a column header with a keyboard-reachable sort button
    assert parsed.headers
    assert all(h.get("scope") == "col" for h in parsed.headers)
    assert page.text.count('<button type="button">') == len(parsed.headers)


def test_hidden_phase_renders_no_score(client: TestClient, seeded: Seeded) -> None:
    board = client.get(f"/api/v1/phases/{seeded.hidden_phase_id}/leaderboard").json()
    assert board["scores_visible"] is False
    assert board["entries"] == []
    page = client.get(f"/phases/{seeded.hidden_phase_id}/leaderboard")
    assert page.status_code == 200
    assert 'id="scores-hidden"' in page.text
    assert f"{HIDDEN_F1:.3f}" not in page.text
    assert "<circle" not in page.text
    detail = client.get(f"/submissions/{seeded.hidden_submission_id}")
    assert detail.status_code == 404
    assert f"{HIDDEN_F1:.3f}" not in detail.text


def test_submission_page(client: TestClient, seeded: Seeded) -> None:
    sid = seeded.submission_ids["Aurora"]
    board = client.get(f"/api/v1/phases/{seeded.public_phase_id}/leaderboard").json()
    entry = next(e for e in board["entries"] if e["submission_id"] == sid)
    page = client.get(f"/submissions/{sid}")
    assert page.status_code == 200
    assert "stain-augmented RetinaNet described by Aurora." in page.text
    for label in SCANNERS:
        row = re.search(rf'<tr data-group="{label}">.*?<td class="f1">([^<]+)</td>', page.text, re.S)
        assert row is not None
        assert row.group(1) == f"{entry['groups'][label]['f1']:.3f}"
    assert client.get("/submissions/999999").status_code == 404


def test_challenge_overview_lists_phases_with_dates(client: TestClient, seeded: Seeded) -> None:
    page = client.get(f"/challenges/{seeded.challenge_slug}")
    assert page.status_code == 200
    challenge = client.get(f"/api/v1/challenges/{seeded.challenge_slug}").json()
    for phase in challenge["phases"]:
        assert f'href="/phases/{phase["id"]}/leaderboard"' in page.text
        assert phase["closes_at"][:10] in page.text
    assert "hidden until close" in page.text
    index = client.get("/")
    assert f'href="/challenges/{seeded.challenge_slug}"' in index.text
    assert client.get("/challenges/nope").status_code == 404


def test_leaderboard_page_is_one_sql_statement(client: TestClient, seeded: Seeded, engine: Engine) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT")):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        page = client.get(f"/phases/{seeded.public_phase_id}/leaderboard")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert page.status_code == 200
    assert len(statements) == 1, statements
