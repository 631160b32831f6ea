"""The participant CLI against a live `midog-eval serve` (embedded SQLite, its own worker): log in, submit a
predictions file with --wait, and read the final per-scanner table, whose counts are known by construction."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.cli import demo

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from app.cli import main; main()"]
TEAM = "Team CLI"


@dataclass
class Live:
    url: str
    phase_id: int
    token: str
    test_set: Path
    env: dict[str, str]
    organiser_token: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("cli-live")
    data_dir = root / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        MIDOG_DATA_DIR=str(data_dir),
        MIDOG_RECONCILE_INTERVAL_S="2",
        MIDOG_REQUEUE_AFTER_S="4",
        XDG_CONFIG_HOME=str(root / "config"),
        COLUMNS="200",
    )
    test_set = demo.build_test_set(root / "set", scanners=2, cases=1, size=(512, 384), seed=3)
    database_url = f"sqlite:///{(data_dir / 'midog-eval.sqlite3').resolve()}"
    setup = demo.setup_challenge(database_url, test_set, [TEAM], bootstrap=0)
    port = _free_port()
    server = demo.start_server(env, host="127.0.0.1", port=port, log=data_dir / "logs" / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        demo.wait_ready(url, server, timeout_s=90)
        yield Live(url, setup.phase_id, setup.team_tokens[TEAM], test_set, env, setup.organiser_token)
    finally:
        demo.stop_server(server)


def cli(live: Live, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=live.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def _predictions(test_set: Path) -> tuple[dict[str, object], dict[str, tuple[int, int, int]]]:
    """Ground truth minus the first figure of each case on the first scanner, plus one far-away false
    positive on every image of the second: expected (TP, FP, FN) per scanner."""
    truth: dict[str, list[list[float]]] = json.loads((test_set / "ground-truth" / "ground-truth.json").read_text())
    manifest = json.loads((test_set / "manifest.json").read_text())
    scanner = {c["name"]: c["groups"]["scanner"] for c in manifest["cases"]}
    first, second = sorted(set(scanner.values()))[:2]
    expected: dict[str, tuple[int, int, int]] = {}
    doc: dict[str, object] = {}
    for name, points in truth.items():
        group = scanner[name]
        kept = [list(p) for p in points]
        fp = fn = 0
        if group == first and kept:
            kept = kept[1:]
            fn = 1
        if group == second:
            kept.append([0.001, 0.001, 0])  # 1 µm from the corner: no figure is rendered that close
            fp = 1
        tp = len(points) - fn
        old = expected.get(group, (0, 0, 0))
        expected[group] = (old[0] + tp, old[1] + fp, old[2] + fn)
        doc[name] = {"type": "Multiple points", "points": [{"point": p, "probability": 0.9} for p in kept]}
    return doc, expected


def test_login_stores_a_private_token(live: Live) -> None:
    result = cli(live, "login", "--server", live.url, "--token", live.token)
    assert result.returncode == 0, result.stderr
    assert TEAM in result.stdout
    config = Path(live.env["XDG_CONFIG_HOME"]) / "midog-eval" / "config.json"
    assert json.loads(config.read_text()) == {"server": live.url, "token": live.token}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_submit_wait_prints_the_per_scanner_table(live: Live, tmp_path: Path) -> None:
    assert cli(live, "login", "--server", live.url, "--token", live.token).returncode == 0
    doc, expected = _predictions(live.test_set)
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(doc))
    started = time.monotonic()
    result = cli(live, "submit", f"{demo.CHALLENGE_SLUG}/{demo.PHASE_SLUG}", str(path), "--wait", "--method", "GT-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 90
    out = result.stdout
    assert "succeeded" in out
    # live status lines went to stderr while waiting
    assert "succeeded 100%" in result.stderr
    assert "polling" not in result.stderr  # followed through the server-sent event stream
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.count("│") >= 9
    }
    for group, (tp, fp, fn) in expected.items():
        assert rows[group][:3] == [str(tp), str(fp), str(fn)], out
        f1 = 2 * tp / (2 * tp + fp + fn)
        assert rows[group][5].startswith(f"{f1:.3f}"), out
    total = [sum(v[i] for v in expected.values()) for i in range(3)]
    assert rows["all"][:3] == [str(n) for n in total], out

    # the same numbers through the other commands (the board is rebuilt just after the result commits)
    deadline = time.monotonic() + 10
    board = cli(live, "leaderboard", str(live.phase_id))
    while TEAM not in board.stdout and time.monotonic() < deadline:
        time.sleep(0.3)
        board = cli(live, "leaderboard", str(live.phase_id))
    assert board.returncode == 0, board.stderr
    assert TEAM in board.stdout
    assert "GT-1" in board.stdout
    listing = cli(live, "status")
    assert listing.returncode == 0, listing.stderr
    assert "succeeded" in listing.stdout


def test_invalid_file_is_refused_with_the_servers_reason(live: Live, tmp_path: Path) -> None:
    assert cli(live, "login", "--server", live.url, "--token", live.token).returncode == 0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"nope.tiff": {"type": "Multiple points", "points": []}}))
    result = cli(live, "submit", str(live.phase_id), str(path))
    assert result.returncode == 1
    assert "error: 422" in result.stderr
    assert "nope.tiff" in result.stderr


def test_bad_token_names_the_fix(live: Live) -> None:
    env = {**live.env, "MIDOG_TOKEN": "mdg_not-a-token"}
    result = subprocess.run(
        [*CLI, "status", "--server", live.url], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "401" in result.stderr
    assert "midog-eval login" in result.stderr


def test_challenges_lists_the_phase(live: Live) -> None:
    result = cli(live, "challenges", "--server", live.url)
    assert result.returncode == 0, result.stderr
    assert f"{demo.CHALLENGE_SLUG}/{demo.PHASE_SLUG}" in result.stdout
    assert httpx.get(f"{live.url}/api/v1/phases/{live.phase_id}", timeout=10).json()["slug"] == demo.PHASE_SLUG


def test_report_writes_a_self_contained_file(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "prelim.html"
    result = cli(live, "report", f"{demo.CHALLENGE_SLUG}/{demo.PHASE_SLUG}", "--out", str(out), "--server", live.url)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in " ".join(result.stdout.split())
    html = out.read_text(encoding="utf-8")
    assert "<style>" in html
    assert "<script" not in html
    assert "<dt>Missing results</dt>" in html
    board = httpx.get(f"{live.url}/api/v1/phases/{live.phase_id}/leaderboard", timeout=10).json()
    for entry in board["entries"]:
        assert entry["team_name"] in html
    missing = cli(live, "report", "999999", "--out", str(tmp_path / "none.html"), "--server", live.url)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    assert not (tmp_path / "none.html").exists()


def test_register_invite_join_show_and_quota_from_zero(live: Live, tmp_path: Path) -> None:
    """A participant starts from nothing: registers a team, invites a teammate who joins with their own
    account (their own config directory), both see the team, and the quota of the phase is printed."""
    founder = {**live.env, "XDG_CONFIG_HOME": str(tmp_path / "founder"), "MIDOG_PASSWORD": "a long passphrase 1"}
    made = subprocess.run(
        [*CLI, "register", "--server", live.url, "--team", "Team Zero", "--email", "zero@example.org"],
        env=founder, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "team Team Zero" in made.stdout
    assert json.loads((tmp_path / "founder" / "midog-eval" / "config.json").read_text())["server"] == live.url

    invited = subprocess.run(
        [*CLI, "team", "invite", "mate@example.org"],
        env=founder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert invited.returncode == 0, invited.stderr
    command = " ".join(invited.stdout.split())
    token = command.split("--invitation ", 1)[1].split()[0]
    assert f"midog-eval team join --server {live.url} --invitation {token} --email mate@example.org" in command

    mate = {**live.env, "XDG_CONFIG_HOME": str(tmp_path / "mate"), "MIDOG_PASSWORD": "another passphrase 2"}
    joined = subprocess.run(
        [*CLI, "team", "join", "--server", live.url, "--invitation", token, "--email", "mate@example.org"],
        env=mate, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    assert "team Team Zero" in joined.stdout

    shown = subprocess.run([*CLI, "team", "show"], env=mate, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "zero@example.org" in shown.stdout
    assert "mate@example.org" in shown.stdout
    assert "joined" in shown.stdout

    again = subprocess.run(
        [*CLI, "team", "join", "--server", live.url, "--invitation", token, "--email", "mate@example.org"],
        env=mate, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 1  # an invitation is used once

    quota = subprocess.run(
        [*CLI, "quota", f"{demo.CHALLENGE_SLUG}/{demo.PHASE_SLUG}"],
        env=mate, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert quota.returncode == 0, quota.stderr
    assert "today: unlimited" in quota.stdout
    assert "running now: 0 of at most 5" in quota.stdout


BUNDLE = """\
version: 1
challenge:
  slug: bundle-cli
  title: A challenge from a bundle
  description: Created by midog-eval admin apply.
test_sets:
  - name: demo-set
    path: {test_set}
phases:
  - slug: preliminary
    title: Preliminary
    test_set: demo-set
    daily_quota: 2
    seen_groups: [{seen}]
    scoring_options:
      bootstrap: 100
  - slug: final
    title: Final
    kind: final
    test_set: demo-set
    parent_phase: preliminary
    leaderboard_visibility: hidden_until_close
    opens_at: 2030-01-01T00:00:00Z
"""


def _comparable(challenge: dict[str, object]) -> dict[str, object]:
    """A challenge as the organiser API reads it, without what differs between servers (ids, fingerprints)."""
    server_bound = {"id", "challenge_id", "test_set_id", "parent_phase_id", "scoring_fingerprint", "is_open"}
    phases = [{k: v for k, v in p.items() if k not in server_bound} for p in challenge["phases"]]  # type: ignore[attr-defined]
    return {**{k: v for k, v in challenge.items() if k not in {"id", "phases"}}, "phases": phases}


def test_admin_apply_is_idempotent_and_an_export_recreates_the_challenge(live: Live, tmp_path: Path) -> None:
    organiser = {**live.env, "XDG_CONFIG_HOME": str(tmp_path / "organiser"), "MIDOG_TOKEN": live.organiser_token}
    manifest = json.loads((live.test_set / "manifest.json").read_text())
    first_scanner = sorted({c["groups"]["scanner"] for c in manifest["cases"]})[0]
    bundle = tmp_path / "challenge.yaml"
    bundle.write_text(BUNDLE.format(test_set=live.test_set.resolve(), seen=first_scanner))

    def admin(*args: str, env: dict[str, str] = organiser) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "admin", *args], env=env, capture_output=True, text=True, timeout=120, check=False)

    dry = admin("apply", str(bundle), "--server", live.url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+ create challenge 'bundle-cli'" in dry.stdout
    assert "+ create phase 'final'" in dry.stdout
    assert "register test set" not in dry.stdout  # the server has demo-set at that path already
    assert httpx.get(f"{live.url}/api/v1/challenges/bundle-cli", timeout=10).status_code == 404
    applied = admin("apply", str(bundle), "--server", live.url)
    assert applied.returncode == 0, applied.stderr
    assert "applied 3 steps" in applied.stdout
    again = admin("apply", str(bundle), "--server", live.url)
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout

    bundle.write_text(bundle.read_text().replace("daily_quota: 2", "daily_quota: 4"))
    changed = admin("apply", str(bundle), "--server", live.url)
    assert "~ phase 'preliminary': change daily_quota" in changed.stdout
    assert "applied 1 steps" in changed.stdout
    bundle.write_text(bundle.read_text().replace("daily_quota: 4", "daily_qouta: 4"))
    refused = admin("apply", str(bundle), "--server", live.url)
    assert refused.returncode == 2
    assert f"{bundle}:13: phases[0].daily_qouta: Extra inputs are not permitted" in refused.stderr

    exported = tmp_path / "exported.yaml"
    done = admin("export", "bundle-cli", "--out", str(exported), "--server", live.url)
    assert done.returncode == 0, done.stderr
    assert "parent_phase: preliminary" in exported.read_text()

    # a fresh server: an empty database of its own, the exported bundle applied to it
    fresh_dir = tmp_path / "fresh"
    fresh_env = {**live.env, "MIDOG_DATA_DIR": str(fresh_dir), "XDG_CONFIG_HOME": str(tmp_path / "fresh-config")}
    port = _free_port()
    server = demo.start_server(fresh_env, host="127.0.0.1", port=port, log=fresh_dir / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"
        demo.wait_ready(url, server, timeout_s=90)
        token = admin("create-token", "--name", "bundle test", env=fresh_env).stdout.strip()
        fresh_env["MIDOG_TOKEN"] = token
        recreated = admin("apply", str(exported), "--server", url, env=fresh_env)
        assert recreated.returncode == 0, recreated.stderr
        assert "register test set 'demo-set'" in recreated.stdout
        assert "nothing to change" in admin("apply", str(exported), "--server", url, env=fresh_env).stdout

        def read(base: str, tok: str) -> dict[str, object]:
            rows = httpx.get(f"{base}/api/v1/admin/challenges", headers={"Authorization": f"Bearer {tok}"}).json()
            return next(c for c in rows if c["slug"] == "bundle-cli")

        assert _comparable(read(url, token)) == _comparable(read(live.url, live.organiser_token))
    finally:
        demo.stop_server(server)
