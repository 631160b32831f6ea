"""A participant's path in headless Chromium against `midog-eval serve` (embedded database, its own workers):
register by keyboard only, invite a member, submit a predictions file through the submit page, follow it to
"succeeded" and find the team on the leaderboard; a refused file's error appears beside the form. Phone-sized
pages fit. Screenshots are kept under test-artifacts/ (docs/images holds copies).

In CI (CI=true) a missing chromium or playwright is a failure, never a skip (tests/pages/test_browser.py)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_browser import ARTIFACTS, browser_context  # noqa: F401  (the module-scoped Chromium fixture)

from app.cli import demo

PASSWORD = "correct horse battery"


@dataclass
class Served:
    url: str
    phase_id: int
    test_set: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    data_dir = root / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(MIDOG_DATA_DIR=str(data_dir), MIDOG_RECONCILE_INTERVAL_S="2")
    test_set = demo.build_test_set(root / "set", scanners=2, cases=1, size=(512, 384), seed=4)
    setup = demo.setup_challenge(f"sqlite:///{(data_dir / 'midog-eval.sqlite3').resolve()}", test_set, [], bootstrap=0)
    port = _free_port()
    server = demo.start_server(env, host="127.0.0.1", port=port, log=data_dir / "logs" / "serve.log")
    try:
        demo.wait_ready(f"http://127.0.0.1:{port}", server, timeout_s=90)
        yield Served(f"http://127.0.0.1:{port}", setup.phase_id, test_set)
    finally:
        demo.stop_server(server)


def _perfect_predictions(test_set: Path) -> dict[str, Any]:
    truth = json.loads((test_set / "ground-truth" / "ground-truth.json").read_text())
    return {
        name: {"type": "Multiple points", "points": [{"point": p, "probability": 0.9} for p in points]}
        for name, points in truth.items()
    }


def _type_into(page: Any, label: str, text: str) -> None:
    """Move the focus to the field by Tab until it is the one labelled `label`, then type (no mouse)."""
    for _ in range(40):
        focused = page.evaluate("document.activeElement && document.activeElement.labels && "
                                "document.activeElement.labels[0] && document.activeElement.labels[0].innerText")  # fmt: skip
        if focused and focused.strip().startswith(label):
            page.keyboard.type(text)
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"no field labelled {label!r} reachable by Tab")


def test_register_invite_submit_and_reach_the_board(served: Served, browser_context: Any, tmp_path: Path) -> None:  # noqa: F811
    page = browser_context.new_page()
    page.goto(f"{served.url}/register")
    _type_into(page, "Team name", "Keyboard Team")
    _type_into(page, "Your e-mail", "keys@example.org")
    _type_into(page, "Password", PASSWORD)
    page.keyboard.press("Enter")  # submits the form
    page.wait_for_url("**/team")
    assert "Team Keyboard Team" in page.inner_text("h1")
    ARTIFACTS.mkdir(exist_ok=True)

    page.fill("#f-email", "colleague@example.org")
    page.click("form[action='/team/invitations'] button")
    token = page.input_value("#invitation-token")
    assert token.startswith("inv_") or len(token) > 16
    page.screenshot(path=str(ARTIFACTS / "team.png"), full_page=True)

    # a refused file: its error beside the form, naming the case
    page.goto(f"{served.url}/phases/{served.phase_id}/submit")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nope.tiff": {"type": "Multiple points", "points": []}}))
    form = page.locator("form[data-kind='predictions']")
    form.locator("input[type=file]").set_input_files(str(bad))
    form.locator("button[type=submit]").click()
    error = page.locator("#error-predictions")
    error.wait_for()
    assert "nope.tiff" in error.inner_text()
    assert page.locator("#file-predictions").get_attribute("aria-describedby") == "error-predictions"
    page.screenshot(path=str(ARTIFACTS / "submit-refused.png"), full_page=True)

    # a good one: submitted through the page (upload progress by script), followed to the end
    good = tmp_path / "predictions.json"
    good.write_text(json.dumps(_perfect_predictions(served.test_set)))
    form = page.locator("form[data-kind='predictions']")
    form.locator("input[type=file]").set_input_files(str(good))
    form.locator("input[name=method_name]").fill("Ground truth, by browser")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/my/submissions**")
    deadline = time.monotonic() + 90
    while page.locator(".submission-card .status").first.inner_text() != "succeeded":
        assert time.monotonic() < deadline, page.content()[-2000:]
        page.wait_for_timeout(1000)
        page.reload()
    assert page.locator(".submission-card .f1").first.inner_text().startswith("1.000")
    page.screenshot(path=str(ARTIFACTS / "my-submissions.png"), full_page=True)

    page.goto(f"{served.url}/phases/{served.phase_id}/leaderboard")
    deadline = time.monotonic() + 20
    while "Keyboard Team" not in page.inner_text("body"):
        assert time.monotonic() < deadline
        page.wait_for_timeout(500)
        page.reload()
    assert "Ground truth, by browser" in page.inner_text("#leaderboard")
    page.close()


def test_account_pages_fit_a_phone(served: Served, browser_context: Any) -> None:  # noqa: F811
    page = browser_context.new_page()
    page.set_viewport_size({"width": 375, "height": 740})
    for path in ("/register", "/login", "/join"):
        page.goto(served.url + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
        width = page.eval_on_selector("input[name=email]", "e => e.getBoundingClientRect().width")
        assert 200 < width <= 375, (path, width)
    page.screenshot(path=str(ARTIFACTS / "register-phone.png"), full_page=True)
    page.close()
