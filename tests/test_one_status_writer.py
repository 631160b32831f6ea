"""An evaluation's status and its timestamps are written in one place: app/lifecycle.py. Anywhere else in the
product (app/, worker/) such a write would be a transition that skips the lifecycle's rules: its
compare-and-set, its clearing of the lease, its leaderboard rebuild."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("app", "worker")
THE_LIFECYCLE = REPO_ROOT / "app" / "lifecycle.py"
FIELDS = {"status", "queued_at", "started_at", "finished_at"}


def _touches_evaluation(node: ast.AST) -> bool:
    """True when the expression names the Evaluation table (update(Evaluation).where(...), Evaluation(...))."""
    return any(isinstance(n, ast.Name) and n.id == "Evaluation" for n in ast.walk(node))


def status_writes(source: str) -> list[tuple[int, str]]:
    """(line, what) of every write of an evaluation's status or timestamps in a module's source."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in ast.walk(target) if isinstance(t, ast.expr)]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        found += [(t.lineno, f".{t.attr} =") for t in targets if isinstance(t, ast.Attribute) and t.attr == "status"]
        found += [
            (t.lineno, f".{t.attr} =")
            for t in targets
            if isinstance(t, ast.Attribute) and t.attr in FIELDS - {"status"} and _touches_evaluation_name(t.value)
        ]
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "setattr" and len(node.args) > 1:
                name = node.args[1]
                if isinstance(name, ast.Constant) and name.value in FIELDS:
                    found.append((node.lineno, f"setattr {name.value}"))
            writes_row = (isinstance(func, ast.Name) and func.id == "Evaluation") or (
                isinstance(func, ast.Attribute) and func.attr == "values" and _touches_evaluation(func.value)
            )
            if writes_row:
                found += [(node.lineno, f"{k.arg}=") for k in node.keywords if k.arg in FIELDS]
    return found


def _touches_evaluation_name(node: ast.expr) -> bool:
    # `ev.finished_at = ...`: any object but the worker-host rows (their started_at is a heartbeat's)
    return not (isinstance(node, ast.Name) and node.id in ("host", "worker_host"))


def test_the_checker_sees_every_form_of_status_write() -> None:
    source = (
        "ev.status = EvaluationStatus.QUEUED\n"
        "ev.finished_at = now\n"
        "session.add(Evaluation(submission_id=1, status=EvaluationStatus.QUEUED, queued_at=now))\n"
        "session.execute(update(Evaluation).where(Evaluation.id == 1).values(status=s, started_at=now))\n"
        "setattr(ev, 'status', s)\n"
        "a.status, b = 1, 2\n"
    )
    kinds = [what for _line, what in status_writes(source)]
    assert kinds.count(".status =") == 2
    assert kinds.count("status=") == 2
    assert {".finished_at =", "queued_at=", "started_at=", "setattr status"} <= set(kinds)
    reads = "x = ev.status\nif ev.status is S: pass\nschema = Read(status=ev.status)\nd = {'status': 1}\n"
    assert status_writes(reads) == []
    assert status_writes("session.execute(update(Team).values(status=1))\n") == []


@pytest.mark.parametrize("package", PRODUCT)
def test_nothing_but_the_lifecycle_writes_an_evaluation_status(package: str) -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {what}"
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if path != THE_LIFECYCLE
        for line, what in status_writes(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "ask app.lifecycle for the transition instead:\n" + "\n".join(offenders)


def test_the_lifecycle_does_write_it() -> None:
    assert status_writes(THE_LIFECYCLE.read_text(encoding="utf-8")), "the checker would be vacuous"
