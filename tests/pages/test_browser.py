"""Headless Chromium (Debian's /usr/bin/chromium, driven by playwright) against a live uvicorn server: the
leaderboard's per-scanner columns and chart carry the JSON's numbers, a column sorts by mouse and keyboard,
a submission opens, the page fits a phone, and screenshots are kept under test-artifacts/.

In CI (CI=true) a missing chromium or playwright is a failure, never a skip (.ci/services.sh installs chromium).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import itertools

from seed import SCANNERS, Seeded, seed

from worker.safe_delete import discard_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _require(condition: bool, message: str) -> None:
    if condition:
        return
    if _in_ci():
        pytest.fail(message + " (CI requires it; .ci/services.sh installs chromium, the dev extra playwright)")
    pytest.skip(message)


@dataclass
class Live:
    url: str
    seeded: Seeded
    database_url: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from app.cli.serve import migrate_database
    from app.db import make_engine, make_session_factory, session_scope

    root = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{root / 'pages.sqlite3'}"
    migrate_database(url)
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as session:
        seeded = seed(session)
    engine.dispose()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_")}
    env.update(MIDOG_DATABASE_URL=url, MIDOG_DATA_DIR=str(root / "data"))
    log = (root / "uvicorn.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (root / "uvicorn.log").read_text()[-2000:]
            try:
                if httpx.get(base + "/api/v1/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.2)
        yield Live(base, seeded, url)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _require(CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright package is not installed (dev extra)")
        raise
    profile = tmp_path_factory.mktemp("chromium-profile")  # a new --user-data-dir
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
    discard_tree(profile)


def _rows(page: Any) -> list[dict[str, Any]]:
    """Each leaderboard row: its submission id and the text of every keyed cell, as the browser shows it."""
    rows: list[dict[str, Any]] = page.eval_on_selector_all(
        "#leaderboard tbody tr",
        """rows => rows.map(r => ({
            submission: Number(r.dataset.submission),
            cells: Object.fromEntries(Array.from(r.querySelectorAll('[data-key]')).map(
                c => [c.dataset.key + (c.dataset.group ? ':' + c.dataset.group : ''), c.innerText.trim()]))
        }))""",
    )
    return rows


def test_leaderboard_in_chromium(live: Live, browser_context: Any) -> None:
    board = httpx.get(f"{live.url}/api/v1/phases/{live.seeded.public_phase_id}/leaderboard", timeout=10).json()
    entries = {e["submission_id"]: e for e in board["entries"]}
    page = browser_context.new_page()
    page.goto(f"{live.url}/phases/{live.seeded.public_phase_id}/leaderboard")

    # per-scanner columns, as rendered
    headers = page.eval_on_selector_all("#leaderboard thead th", "ths => ths.map(t => t.innerText.trim())")
    for label in SCANNERS:
        assert any(h.startswith(f"F1 {label}") for h in headers), headers
    rows = _rows(page)
    assert [r["submission"] for r in rows] == [e["submission_id"] for e in board["entries"]]
    for row in rows:
        entry = entries[row["submission"]]
        for label in SCANNERS:
            assert row["cells"][f"group-f1:{label}"] == f"{entry['groups'][label]['f1']:.3f}"
        assert row["cells"]["f1"] == f"{entry['f1']:.3f} [{entry['f1_ci_low']:.3f}, {entry['f1_ci_high']:.3f}]"

    # the chart: one drawn point per entry and scanner, with the JSON's F1, higher F1 drawn higher
    points = page.eval_on_selector_all(
        "#f1-chart g.series circle",
        """cs => cs.map(c => { const b = c.getBoundingClientRect();
            return {submission: Number(c.parentElement.dataset.submission), group: c.dataset.group,
                    f1: c.dataset.f1, y: b.top + b.height / 2, visible: b.width > 0 && b.height > 0}; })""",
    )
    assert len(points) == len(entries) * len(SCANNERS)
    assert all(p["visible"] for p in points)
    for p in points:
        assert p["f1"] == f"{entries[p['submission']]['groups'][p['group']]['f1']:.3f}"
    for label in SCANNERS:
        column = sorted((p for p in points if p["group"] == label), key=lambda p: float(p["f1"]))
        assert all(a["y"] >= b["y"] for a, b in itertools.pairwise(column)), label
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)

    # sort by a scanner column with the keyboard: focus its header button, press Enter
    button = page.locator("#leaderboard thead th[data-group='Scanner C'] button")
    button.focus()
    page.keyboard.press("Enter")
    header = page.locator("#leaderboard thead th[data-group='Scanner C']")
    assert header.get_attribute("aria-sort") == "descending"
    by_c = sorted(board["entries"], key=lambda e: -e["groups"]["Scanner C"]["f1"])
    assert [r["submission"] for r in _rows(page)] == [e["submission_id"] for e in by_c]
    button.click()  # and by mouse: ascending
    assert header.get_attribute("aria-sort") == "ascending"
    assert [r["submission"] for r in _rows(page)] == [e["submission_id"] for e in reversed(by_c)]

    # open a submission from the table
    top = by_c[-1]
    page.locator(f"#leaderboard tbody tr[data-submission='{top['submission_id']}'] a").first.click()
    page.wait_for_url(f"**/submissions/{top['submission_id']}")
    per_scanner = page.eval_on_selector_all(
        "#per-scanner tbody tr[data-group]", "rs => rs.map(r => [r.dataset.group, r.querySelector('.f1').innerText])"
    )
    assert per_scanner == [[label, f"{top['groups'][label]['f1']:.3f}"] for label in SCANNERS]
    page.screenshot(path=str(ARTIFACTS / "submission.png"), full_page=True)
    page.close()


def test_leaderboard_fits_a_phone(live: Live, browser_context: Any) -> None:
    page = browser_context.new_page()
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(f"{live.url}/phases/{live.seeded.public_phase_id}/leaderboard")
    # the page itself never scrolls sideways; the wide table scrolls inside its own box
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    wrap = page.eval_on_selector(".table-wrap", "w => [w.scrollWidth, w.clientWidth]")
    assert wrap[0] > wrap[1]
    chart_width = page.eval_on_selector("#f1-chart", "s => s.getBoundingClientRect().width")
    assert 0 < chart_width <= 375
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "leaderboard-phone.png"), full_page=True)
    page.close()


def test_hidden_phase_in_chromium(live: Live, browser_context: Any) -> None:
    page = browser_context.new_page()
    page.goto(f"{live.url}/phases/{live.seeded.hidden_phase_id}/leaderboard")
    assert page.locator("#scores-hidden").is_visible()
    assert page.locator("#leaderboard").count() == 0
    assert page.locator("#f1-chart").count() == 0
    page.close()


def test_analysis_page_in_chromium(live: Live, browser_context: Any) -> None:
    """Reached from the leaderboard by keyboard; every plot drawn, no CSP violation, fits a phone."""
    phase = live.seeded.public_phase_id
    doc = httpx.get(f"{live.url}/api/v1/phases/{phase}/analysis", timeout=10).json()["analysis"]
    page = browser_context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{live.url}/phases/{phase}/leaderboard")
    page.locator("#analysis-link").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/phases/{phase}/analysis")
    sizes = page.eval_on_selector_all(
        "svg.plot", "ss => ss.map(s => { const b = s.getBoundingClientRect(); return [s.id, b.width, b.height]; })"
    )
    assert [s[0] for s in sizes] == ["blob-plot", "significance-map", "rank-comparison", "heatmap", "gap-plot"]
    assert all(w > 100 and h > 100 for _, w, h in sizes), sizes
    cells = page.eval_on_selector_all("#heatmap g > rect", "rs => rs.length")
    assert cells == len(doc["entries"]) * len(doc["groups"])
    assert page.locator("#tau-median").inner_text() == f"{doc['ranking']['tau_median']:.3f}"
    assert not violations, violations
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "analysis.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # wide plots scroll in their own box
    page.close()


def test_report_works_offline_in_chromium(live: Live, browser_context: Any, tmp_path: Path) -> None:
    """The downloaded report opened from disk with the network off: styled, every plot drawn."""
    phase = live.seeded.public_phase_id
    report = tmp_path / "report.html"
    report.write_bytes(httpx.get(f"{live.url}/api/v1/phases/{phase}/report.html", timeout=30).content)
    page = browser_context.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    browser_context.set_offline(True)
    try:
        page.goto(report.as_uri())
        assert page.eval_on_selector("table", "t => getComputedStyle(t).borderCollapse") == "collapse"
        assert page.locator("svg.plot").count() == 5
        assert page.locator("dl.bias dt").count() == 6
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    finally:
        browser_context.set_offline(False)
        page.close()
    assert not failed, failed


def test_an_organiser_re_runs_a_failed_submission_from_the_dashboard(live: Live, browser_context: Any) -> None:
    """Signed in with an organiser token (typed, then Enter), the failed submission's Re-run asks first; after
    the confirmation its evaluation is queued again."""
    from sqlalchemy import select

    from app.auth.service import create_token
    from app.db import make_engine, make_session_factory, session_scope
    from app.tables import Evaluation, EvaluationStatus, TokenScope

    engine = make_engine(live.database_url)
    target = live.seeded.submission_ids["Cirrus"]
    with session_scope(make_session_factory(engine, write=True)) as session:
        token = create_token(session, scope=TokenScope.ORGANISER, name="browser").token
        evaluation = session.scalars(select(Evaluation).where(Evaluation.submission_id == target)).one()
        evaluation.status = EvaluationStatus.FAILED
        evaluation.error_message = "the container exceeded its memory limit"
    page = browser_context.new_page()
    page.goto(f"{live.url}/organiser")
    page.wait_for_url("**/organiser/login")
    page.focus("#f-token")
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    page.wait_for_url("**/organiser")
    row = page.locator(f"#submission-{target}")
    assert row.get_attribute("data-status") == "failed"
    assert "the container exceeded its memory limit" in row.locator(".failure").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "organiser-dashboard.png"), full_page=True)
    row.get_by_role("link", name="Re-run").click()
    page.wait_for_url(f"**/organiser/submissions/{target}/requeue")
    page.locator("#confirm").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/organiser**")
    assert page.locator(f"#submission-{target}").get_attribute("data-status") == "queued"
    page.close()
    with session_scope(make_session_factory(engine)) as session:
        statuses = session.scalars(select(Evaluation.status).where(Evaluation.submission_id == target)).all()
    engine.dispose()
    assert EvaluationStatus.QUEUED in statuses
