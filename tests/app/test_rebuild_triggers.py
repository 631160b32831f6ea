"""Where a leaderboard rebuild comes from: every state change that alters what a board shows sends the queued
task `standings.rebuild(phase_id=)` after commit (through app.lifecycle), and nothing else does. Importing
app.db registers no session listener: no hidden hook rebuilds a board."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from api_helpers import World

from app.queue import task_sender
from app.tables import Evaluation, RankingMetric

Sent = list[tuple[str, dict[str, int], str]]


def _scored(world: World, name: str = "Alpha", f1: float = 0.5) -> dict[str, Any]:
    team = world.register(name)
    sub = world.submit(team["headers"]).json()
    world.finish(sub["id"], f1=f1)
    return {"team": team, "submission": sub}


def _admin(world: World, method: str, path: str, **kwargs: Any) -> None:
    r = world.client.request(method, f"/api/v1/admin{path}", headers=world.admin(), **kwargs)
    assert r.status_code in (200, 202), r.text


def _land_a_result(world: World, entry: dict[str, Any]) -> None:
    beta = world.register("Beta")
    world.finish(world.submit(beta["headers"]).json()["id"], f1=0.7)


def _discard_by_requeue(world: World, entry: dict[str, Any]) -> None:
    sid = entry["submission"]["id"]
    _admin(world, "POST", f"/submissions/{sid}/requeue", params={"discard_result": "true"})


def _moderate(flag: str) -> Callable[[World, dict[str, Any]], None]:
    def change(world: World, entry: dict[str, Any]) -> None:
        _admin(world, "PATCH", f"/submissions/{entry['submission']['id']}", json={flag: True})

    return change


def _disqualify_team(world: World, entry: dict[str, Any]) -> None:
    team_id = entry["submission"]["team_id"]
    _admin(world, "PATCH", f"/teams/{team_id}", json={"is_disqualified": True})


def _phase(**fields: Any) -> Callable[[World, dict[str, Any]], None]:
    def change(world: World, entry: dict[str, Any]) -> None:
        world.set_phase(**fields)

    return change


def _reevaluate(world: World, entry: dict[str, Any]) -> None:
    _admin(world, "POST", f"/phases/{world.phase.id}/reevaluate")


# Every state change that must rebuild the board: a result, moderation, a team, the phase's ranking rules.
TRIGGERS: dict[str, Callable[[World, dict[str, Any]], None]] = {
    "a result lands": _land_a_result,
    "a result is discarded by a requeue": _discard_by_requeue,
    "a submission is hidden": _moderate("is_hidden"),
    "a submission is disqualified": _moderate("is_disqualified"),
    "a submission becomes a baseline": _moderate("is_baseline"),
    "a team is disqualified": _disqualify_team,
    "the entry policy changes": _phase(entry_policy="latest"),
    "the ranking metric changes": _phase(ranking_metric=RankingMetric.RECALL),
    "the shown groups change": _phase(shown_groups=["B"]),
    "the seen groups change": _phase(seen_groups=["A"]),
    "the phase is re-evaluated": _reevaluate,
}

# Changes that leave every board as it is: no rebuild.
QUIET: dict[str, Callable[[World, dict[str, Any]], None]] = {
    "the phase's title changes": _phase(title="Another title"),
    "an evaluation fails": lambda world, entry: world.finish(
        world.submit(world.register("Gamma")["headers"]).json()["id"], status=_failed()
    ),
    "a queued evaluation is cancelled by its team": lambda world, entry: _cancel_by_team(world),
}


def _failed() -> Any:
    from app.tables import EvaluationStatus

    return EvaluationStatus.FAILED


def _cancel_by_team(world: World) -> None:
    team = world.register("Delta")
    sub = world.submit(team["headers"]).json()
    r = world.client.post(f"/api/v1/submissions/{sub['id']}/cancel", headers=team["headers"])
    assert r.status_code == 200, r.text


def _rebuilds(sent: Sent) -> list[int]:
    return [kwargs["phase_id"] for name, kwargs, queue in sent if name == "standings.rebuild"]


@pytest.mark.parametrize("change", sorted(TRIGGERS))
def test_each_change_that_alters_a_board_queues_its_rebuild(world: World, sent_tasks: Sent, change: str) -> None:
    entry = _scored(world)
    sent_tasks.clear()
    TRIGGERS[change](world, entry)
    assert _rebuilds(sent_tasks) == [world.phase.id], f"{change}: {sent_tasks}"
    assert all(queue == "cpu" for name, _kwargs, queue in sent_tasks if name == "standings.rebuild")


@pytest.mark.parametrize("change", sorted(QUIET))
def test_changes_that_leave_boards_alone_queue_no_rebuild(world: World, sent_tasks: Sent, change: str) -> None:
    entry = _scored(world)
    sent_tasks.clear()
    QUIET[change](world, entry)
    assert _rebuilds(sent_tasks) == [], f"{change}: {sent_tasks}"


def test_every_board_field_of_the_lifecycle_is_a_listed_trigger() -> None:
    """A new field that decides the board must get a trigger above (the scoring fields by re-evaluation)."""
    from app.lifecycle import BOARD_FIELDS

    covered = {"entry_policy", "ranking_metric", "shown_groups", "seen_groups"}
    by_reevaluation = {"evaluation_version", "scoring_options", "scoring_fingerprint"}
    assert set(BOARD_FIELDS) == covered | by_reevaluation


def test_rebuilds_are_coalesced_while_one_is_queued(world: World) -> None:
    """Results landing while a rebuild waits in the broker send no second one; once it starts, the next
    change sends a new one (the running rebuild may have read before it)."""
    from app.leaderboard.standings import rebuild_phase

    recorded: Sent = []
    with task_sender(lambda name, kwargs, queue: recorded.append((name, kwargs, queue))):
        for name in ("Alpha", "Beta", "Gamma"):
            _scored(world, name)
        assert _rebuilds(recorded) == [world.phase.id]
        rebuild_phase(world.db.get_bind(), world.phase.id)  # the worker runs it
        _scored(world, "Delta")
        assert _rebuilds(recorded) == [world.phase.id, world.phase.id]
    rebuild_phase(world.db.get_bind(), world.phase.id)
    board = world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard").json()
    assert sorted(e["team_name"] for e in board["entries"]) == ["Alpha", "Beta", "Delta", "Gamma"]


def test_a_rollback_sends_no_rebuild(world: World, sent_tasks: Sent) -> None:
    from app.leaderboard.rebuilds import request_rebuild

    sent_tasks.clear()
    request_rebuild(world.db, [world.phase.id])
    world.db.rollback()
    assert _rebuilds(sent_tasks) == []
    assert world.db.get(Evaluation, 10**9) is None  # the session is usable after the rollback


def _session_listeners(module: str, *, path: str = "") -> dict[str, int]:
    """Session event listeners registered, in a fresh interpreter, by importing `module`."""
    code = (
        "import importlib, json, sys\n"
        f"sys.path.insert(0, {path!r}) if {path!r} else None\n"
        "from sqlalchemy.orm import Session, SessionEvents\n"
        f"importlib.import_module({module!r})\n"
        "session = Session()  # an instance's dispatch holds every listener registered on the class too\n"
        "names = [n for n in dir(SessionEvents) if not n.startswith('_') and n != 'dispatch']\n"
        "found = {n: len(getattr(session.dispatch, n)) for n in names if hasattr(session.dispatch, n)}\n"
        "print(json.dumps({n: c for n, c in found.items() if c}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def test_importing_the_database_module_registers_no_listener() -> None:
    assert _session_listeners("app.db") == {}
    assert _session_listeners("app.main") == {}
    assert _session_listeners("worker.tasks") == {}


def test_the_listener_check_sees_a_registered_listener(tmp_path: Path) -> None:
    (tmp_path / "hooked.py").write_text(
        "from sqlalchemy import event\nfrom sqlalchemy.orm import Session\n"
        "event.listen(Session, 'after_commit', lambda session: None)\n"
    )
    assert _session_listeners("hooked", path=str(tmp_path)) == {"after_commit": 1}
