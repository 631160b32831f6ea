"""Leaderboard: best/latest policy, ties share a rank, exclusions, per-scanner columns, one SQL statement per
request, CSV formula-injection safety, ranking robustness."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from api_helpers import CASES, World
from sqlalchemy import event

from app.leaderboard.service import csv_safe
from app.tables import EntryPolicy, EvaluationStatus, RankingMetric, Result


def _scored(world: World, headers: dict[str, str], f1: float, **kw: Any) -> int:
    r = world.submit(headers)
    assert r.status_code == 201, r.text
    sub_id: int = r.json()["id"]
    world.finish(sub_id, f1=f1, **kw)
    return sub_id


def _board(world: World, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard", headers=headers or {})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("policy", [EntryPolicy.BEST, EntryPolicy.LATEST])
def test_entry_policy_picks_one_row_per_team(world: World, policy: EntryPolicy) -> None:
    world.set_phase(entry_policy=policy)
    alpha = world.register("Alpha")
    beta = world.register("Beta")
    a_good = _scored(world, alpha["headers"], 0.9)
    a_late = _scored(world, alpha["headers"], 0.6)
    b_only = _scored(world, beta["headers"], 0.7)
    entries = _board(world)["entries"]
    assert len(entries) == 2
    by_team = {e["team_name"]: e for e in entries}
    assert by_team["Beta"]["submission_id"] == b_only
    if policy is EntryPolicy.BEST:
        assert by_team["Alpha"]["submission_id"] == a_good
        assert [e["team_name"] for e in entries] == ["Alpha", "Beta"]
        assert [e["rank"] for e in entries] == [1, 2]
    else:
        assert by_team["Alpha"]["submission_id"] == a_late
        assert [e["team_name"] for e in entries] == ["Beta", "Alpha"]


def test_ties_share_a_rank_and_the_next_rank_skips(world: World) -> None:
    teams = [world.register(n) for n in ("Alpha", "Beta", "Gamma")]
    for team, f1 in zip(teams, (0.8, 0.8, 0.5), strict=True):
        _scored(world, team["headers"], f1)
    entries = _board(world)["entries"]
    assert [e["rank"] for e in entries] == [1, 1, 3]
    assert [e["score"] for e in entries] == [0.8, 0.8, 0.5]


def test_ranking_metric_ap(world: World) -> None:
    world.set_phase(ranking_metric="ap")
    alpha = world.register("Alpha")
    beta = world.register("Beta")
    _scored(world, alpha["headers"], 0.9, ap=0.1)
    _scored(world, beta["headers"], 0.5, ap=0.6)
    assert [e["team_name"] for e in _board(world)["entries"]] == ["Beta", "Alpha"]


def test_hidden_disqualified_failed_and_old_versions_are_excluded(world: World) -> None:
    alpha = world.register("Alpha")
    beta = world.register("Beta")
    a1 = _scored(world, alpha["headers"], 0.9)
    _scored(world, beta["headers"], 0.5)
    failed = world.submit(beta["headers"]).json()["id"]
    world.finish(failed, status=EvaluationStatus.FAILED)
    # organiser hides Alpha's best: the board falls back to nothing for Alpha (no other result)
    r = world.client.patch(f"/api/v1/admin/submissions/{a1}", headers=world.admin(), json={"is_hidden": True})
    assert r.status_code == 200
    assert [e["team_name"] for e in _board(world)["entries"]] == ["Beta"]
    world.client.patch(f"/api/v1/admin/submissions/{a1}", headers=world.admin(), json={"is_hidden": False})
    world.client.patch(
        f"/api/v1/admin/teams/{beta['team']['id']}", headers=world.admin(), json={"is_disqualified": True}
    )
    assert [e["team_name"] for e in _board(world)["entries"]] == ["Alpha"]
    # a re-evaluation starts a new version: old results stay stored but leave the board until re-scored
    r = world.client.post(f"/api/v1/admin/phases/{world.phase.id}/reevaluate", headers=world.admin())
    assert r.json()["evaluation_version"] == 2
    assert _board(world)["entries"] == []
    assert world.db.query(Result).count() == 2


def test_baselines_are_shown_unranked(world: World) -> None:
    alpha = world.register("Alpha")
    org = world.register("Organisers")
    _scored(world, alpha["headers"], 0.6)
    base = _scored(world, org["headers"], 0.9)
    world.client.patch(f"/api/v1/admin/submissions/{base}", headers=world.admin(), json={"is_baseline": True})
    entries = _board(world)["entries"]
    assert [(e["team_name"], e["rank"], e["is_baseline"]) for e in entries] == [
        ("Alpha", 1, False),
        ("Organisers", None, True),
    ]


def test_per_scanner_columns_follow_shown_groups(world: World) -> None:
    alpha = world.register("Alpha")
    _scored(world, alpha["headers"], 0.6)
    board = _board(world)
    assert board["group_labels"] == ["A", "B"]
    assert board["entries"][0]["groups"]["A"]["f1"] == pytest.approx(0.65)
    world.set_phase(shown_groups=["B"])
    board = _board(world)
    assert board["group_labels"] == ["B"]
    assert set(board["entries"][0]["groups"]) == {"B"}


def test_one_sql_statement_per_leaderboard_request(world: World) -> None:
    for name, f1 in (("Alpha", 0.9), ("Beta", 0.8), ("Gamma", 0.7)):
        team = world.register(name)
        _scored(world, team["headers"], f1)
    phase_id = world.phase.id  # read before counting: the test's own session may refresh it
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            statements.append(statement)

    engine = world.db.get_bind().engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        board = world.client.get(f"/api/v1/phases/{phase_id}/leaderboard").json()
        csv_response = world.client.get(f"/api/v1/phases/{phase_id}/leaderboard.csv")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(board["entries"]) == 3
    assert csv_response.status_code == 200
    assert len(statements) == 2, statements  # one for the JSON request, one for the CSV request


def test_csv_export_is_formula_injection_safe(world: World) -> None:
    evil = world.register("=HYPERLINK(evil)")
    r = world.submit(evil["headers"], data={"method_name": "+cmd|' /C calc'!A0", "description": "@SUM(1)"})
    world.finish(r.json()["id"], f1=0.5)
    text = world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard.csv").text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][rows[0].index("team")] == "'=HYPERLINK(evil)"
    assert rows[1][rows[0].index("method")] == "'+cmd|' /C calc'!A0"
    admin_csv = world.client.get(f"/api/v1/admin/phases/{world.phase.id}/results.csv", headers=world.admin()).text
    cells = [cell for row in csv.reader(io.StringIO(admin_csv)) for cell in row]
    assert "'@SUM(1)" in cells
    assert not any(c.startswith(("=", "+", "@", "\t", "\r")) for c in cells)
    assert all(
        not c.startswith("-") or c.lstrip("-").replace(".", "").isdigit() is False or c.startswith("'") for c in cells
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("=1+1", "'=1+1"), ("-2", "'-2"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("@a", "'@a"), ("plain", "plain"), (None, "")],
)
def test_csv_safe(value: object, expected: str) -> None:
    assert csv_safe(value) == expected


def test_rank_robustness_is_computed_when_results_land(world: World) -> None:
    from app.leaderboard.standings import refresh_standings

    strong = {c["name"]: {"tp": 10, "fp": 0, "fn": 0} for c in CASES}
    weak = {c["name"]: {"tp": 1, "fp": 9, "fn": 9} for c in CASES}
    mixed = {
        "001.tiff": {"tp": 10, "fp": 0, "fn": 0},
        "002.tiff": {"tp": 0, "fp": 10, "fn": 10},
        "003.tiff": {"tp": 5, "fp": 0, "fn": 0},
    }
    alpha, beta, gamma = (world.register(n) for n in ("Alpha", "Beta", "Gamma"))
    _scored(world, alpha["headers"], 1.0, cases=strong)
    _scored(world, beta["headers"], 0.1, cases=weak)
    _scored(world, gamma["headers"], 0.55, cases=mixed)
    entries = {e["team_name"]: e for e in _board(world)["entries"]}  # rebuilt when each result landed
    assert entries["Alpha"]["rank_robustness"] == 1.0  # perfect on every case: always first
    assert 0.0 < entries["Gamma"]["rank_robustness"] <= 1.0
    assert refresh_standings(world.db, phase_id=world.phase.id, resamples=300, seed=1) == 3
    world.db.commit()
    again = {e["team_name"]: e["rank_robustness"] for e in _board(world)["entries"]}
    assert again["Alpha"] == 1.0


def test_a_result_written_by_statement_as_the_worker_does_updates_the_board(world: World) -> None:
    """The worker stores a result with one upsert statement (app.lifecycle.succeed); the board follows it
    through the rebuild the lifecycle queues, with no session hook to recover which phase it touched."""
    from app import lifecycle

    team = world.register("Alpha")
    sub = world.submit(team["headers"]).json()
    ev_id = sub["evaluation"]["id"]
    run = lifecycle.claim(world.db, evaluation_id=ev_id, owner="worker:1", lease_s=60, max_attempts=3)
    scores = {
        "tp": 5,
        "fp": 1,
        "fn": 1,
        "precision": 0.8,
        "recall": 0.8,
        "f1": 0.8,
        "ap": 0.7,
        "f1_ci_low": 0.7,
        "f1_ci_high": 0.9,
        "groups": {},
        "cases": {c["name"]: {"tp": 1, "fp": 0, "fn": 0} for c in CASES},
        "scoring_fingerprint": world.phase.scoring_fingerprint,
        "provenance": {},
    }
    assert lifecycle.succeed(world.db, evaluation_id=ev_id, owner="worker:1", attempt=run.attempt, scores=scores)
    world.db.commit()
    entries = _board(world)["entries"]
    assert [(e["team_name"], e["f1"], e["rank"], e["rank_robustness"]) for e in entries] == [("Alpha", 0.8, 1, 1.0)]


def test_robustness_follows_the_ranking_metric(world: World) -> None:
    """Ranked by recall, a team with perfect recall on every case keeps its rank in every resample; under AP,
    which counts cannot reproduce, no robustness is claimed."""
    sure = {c["name"]: {"tp": 10, "fp": 10, "fn": 0} for c in CASES}  # F1 0.67, recall 1.0
    precise = {c["name"]: {"tp": 5, "fp": 0, "fn": 5} for c in CASES}  # F1 0.67, recall 0.5
    world.set_phase(ranking_metric=RankingMetric.RECALL)
    alpha, beta = (world.register(n) for n in ("Alpha", "Beta"))
    _scored(world, alpha["headers"], 0.67, cases=sure)
    _scored(world, beta["headers"], 0.67, cases=precise)
    entries = {e["team_name"]: e for e in _board(world)["entries"]}
    assert entries["Alpha"]["rank"] == 1
    assert entries["Alpha"]["rank_robustness"] == 1.0
    world.set_phase(ranking_metric=RankingMetric.AP)
    assert all(e["rank_robustness"] is None for e in _board(world)["entries"])


def test_the_interval_shown_is_the_ranking_metrics(world: World) -> None:
    """Each board shows the 95% interval of what it ranks by: F1's, precision's or recall's; AP has none."""
    team = world.register("Alpha")
    _scored(world, team["headers"], 0.5)
    expected = {
        RankingMetric.F1: (0.4, 0.6),
        RankingMetric.PRECISION: (0.7, 0.9),
        RankingMetric.RECALL: (0.6, 0.8),
        RankingMetric.AP: (None, None),
    }
    for metric, (low, high) in expected.items():
        world.set_phase(ranking_metric=metric)
        (entry,) = _board(world)["entries"]
        assert (entry["score_ci_low"], entry["score_ci_high"]) == pytest.approx((low, high)), metric
    page = world.client.get(f"/phases/{world.phase.id}/leaderboard").text
    assert 'data-key="score"' not in page  # ranked by AP: no interval column
    world.set_phase(ranking_metric=RankingMetric.RECALL)
    page = world.client.get(f"/phases/{world.phase.id}/leaderboard").text
    assert "Recall <span" in page
    assert "[0.600, 0.800]" in page


def test_a_result_never_waits_for_the_board_and_a_board_left_stale_is_rebuilt(world: World) -> None:
    """Landing a result only bumps the board's generation; the rebuild after the commit shows it. A rebuild that
    never ran (the process died) leaves the board stale until the reconciler's backstop rebuilds it."""
    from app.leaderboard.rebuilds import mark_stale
    from app.leaderboard.standings import rebuild_stale, stale_phases
    from app.tables import LeaderboardSnapshot

    team = world.register("Alpha")
    _scored(world, team["headers"], 0.5)
    snapshot = world.db.get(LeaderboardSnapshot, world.phase.id)
    world.db.refresh(snapshot)
    assert snapshot.built_generation == snapshot.generation >= 1
    mark_stale(world.db, [world.phase.id])  # the data changed, and its rebuild was lost with a broker
    world.db.commit()
    assert stale_phases(world.db) == [world.phase.id]
    assert rebuild_stale(world.db.get_bind()) == [world.phase.id]
    world.db.expire_all()
    assert stale_phases(world.db) == []
    assert [e["f1"] for e in _board(world)["entries"]] == [0.5]
