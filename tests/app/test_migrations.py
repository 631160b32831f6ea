"""The migrations build exactly the models' schema, and go down and up again, on both backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from api_helpers import write_test_set
from sqlalchemy import create_engine, inspect, text

from app.scoring import fingerprint
from app.tables import Base
from worker.datasets.manifest import scoring_digest


@pytest.mark.parametrize("backend_name", ["postgresql", "sqlite"])
def test_upgrade_downgrade_upgrade_leaves_no_autogenerate_difference(
    backend_name: str, create_database: Callable[[str], str], alembic_cfg: Callable[[str], Config]
) -> None:
    url = create_database(backend_name)
    cfg = alembic_cfg(url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = create_engine(url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


@pytest.mark.parametrize("backend_name", ["postgresql", "sqlite"])
def test_results_from_before_provenance_keep_their_place_on_the_board(
    backend_name: str, create_database: Callable[[str], str], alembic_cfg: Callable[[str], Config], tmp_path: Path
) -> None:
    """0005 computes the fingerprints the application computes, marks old provenance as unrecorded, and
    leaves results of older evaluation versions unranked."""
    root = write_test_set(tmp_path / "set")
    url = create_database(backend_name)
    cfg = alembic_cfg(url)
    command.upgrade(cfg, "0004")
    engine = create_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO test_set (id, name, description, manifest_path, manifest_sha256, case_count, cases, "
                "created_at, updated_at) VALUES (1, 's', '', :m, :h, 1, '{}', :t, :t)"
            ),
            {"m": str(root / "manifest.json"), "h": "0" * 64, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO challenge (id, slug, title, description, is_published, requires_approval, created_at, "
                "updated_at) VALUES (1, 'c', 'C', '', true, false, :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO phase (id, challenge_id, slug, title, kind, allowed_kinds, test_set_id, "
                "failed_count_towards_quota, max_active_per_team, leaderboard_visibility, entry_policy, "
                "ranking_metric, time_limit_s, memory_limit_mb, evaluation_version, scoring_options, created_at, "
                "updated_at) VALUES (1, 1, 'p', 'P', 'preliminary', '[\"predictions\"]', 1, true, 1, 'public', "
                "'best', 'f1', 60, 1024, 2, :o, :t, :t)"
            ),
            {"o": '{"rules": "midog2021"}', "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO team (id, name, name_skeleton, contact_email, is_approved, is_disqualified, created_at, "
                "updated_at) VALUES (1, 't', 't', 't@example.org', true, false, :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO submission (id, phase_id, team_id, kind, file_path, original_filename, sha256, "
                "size_bytes, method_name, description, paper_url, is_baseline, is_hidden, is_disqualified, "
                "created_at, updated_at) VALUES (1, 1, 1, 'predictions', 'x', '', :h, 1, '', '', '', false, false, "
                "false, :t, :t)"
            ),
            {"h": "0" * 64, "t": now},
        )
        for version in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO evaluation (id, submission_id, version, status, attempt, queued_at, progress, "
                    "progress_message, error_message, error_detail, gpu_seconds, created_at, updated_at) VALUES "
                    "(:v, 1, :v, 'succeeded', 1, :t, 1, '', '', '', 0, :t, :t)"
                ),
                {"v": version, "t": now},
            )
            conn.execute(
                text(
                    "INSERT INTO result (id, evaluation_id, submission_id, evaluation_version, tp, fp, fn, precision, "
                    "recall, f1, groups, cases, created_at) VALUES (:v, :v, 1, :v, 1, 0, 0, 1, 1, 1, '{}', '{}', :t)"
                ),
                {"v": version, "t": now},
            )
    command.upgrade(cfg, "head")
    expected = fingerprint({"rules": "midog2021"}, scoring_digest(root))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT scoring_digest FROM test_set")).scalar_one() == scoring_digest(root)
        assert conn.execute(text("SELECT scoring_fingerprint FROM phase")).scalar_one() == expected
        rows = conn.execute(text("SELECT evaluation_version, scoring_fingerprint, provenance FROM result")).all()
    engine.dispose()
    by_version = {version: (value, json.loads(p) if isinstance(p, str) else p) for version, value, p in rows}
    assert by_version[2][0] == expected  # the current version keeps its place
    assert by_version[1][0] == ""  # an older version stays off the board
    assert all(p["recorded"] is False for _, p in by_version.values())


@pytest.mark.parametrize("backend_name", ["postgresql", "sqlite"])
def test_phases_with_public_cases_show_logs_and_no_row_is_lost(
    backend_name: str, create_database: Callable[[str], str], alembic_cfg: Callable[[str], Config]
) -> None:
    """0010 turns logs on exactly for phases whose scoring options say the test set is not hidden, and adds
    its columns in place: on SQLite a rebuilt phase or submission table would cascade-delete their children."""
    url = create_database(backend_name)
    cfg = alembic_cfg(url)
    command.upgrade(cfg, "0009")
    engine = create_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO challenge (id, slug, title, description, is_published, requires_approval, created_at, "
                "updated_at) VALUES (1, 'c', 'C', '', true, false, :t, :t)"
            ),
            {"t": now},
        )
        for phase_id, options in ((1, '{"hidden": false}'), (2, '{"hidden": true}'), (3, "{}")):
            conn.execute(
                text(
                    "INSERT INTO phase (id, challenge_id, slug, title, kind, allowed_kinds, "
                    "failed_count_towards_quota, max_active_per_team, leaderboard_visibility, entry_policy, "
                    "ranking_metric, time_limit_s, memory_limit_mb, evaluation_version, scoring_options, created_at, "
                    "updated_at) VALUES (:i, 1, :s, 'P', 'preliminary', '[\"container\"]', true, 1, 'public', "
                    "'best', 'f1', 60, 1024, 1, :o, :t, :t)"
                ),
                {"i": phase_id, "s": f"p{phase_id}", "o": options, "t": now},
            )
        conn.execute(
            text(
                "INSERT INTO team (id, name, name_skeleton, contact_email, is_approved, is_disqualified, created_at, "
                "updated_at) VALUES (1, 't', 't', 't@example.org', true, false, :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO submission (id, phase_id, team_id, kind, file_path, original_filename, sha256, "
                "size_bytes, method_name, description, paper_url, is_baseline, is_hidden, is_disqualified, "
                "created_at, updated_at) VALUES (1, 1, 1, 'container', 'x', '', :h, 1, '', '', '', false, false, "
                "false, :t, :t)"
            ),
            {"h": "0" * 64, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO evaluation (id, submission_id, version, status, attempt, queued_at, progress, "
                "progress_message, error_message, error_detail, gpu_seconds, infrastructure_failure, created_at, "
                "updated_at) VALUES (1, 1, 1, 'failed', 1, :t, 1, '', 'the program failed', '', 0, false, :t, :t)"
            ),
            {"t": now},
        )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        shown = dict(conn.execute(text("SELECT id, show_logs FROM phase")).all())
        modes = set(conn.execute(text("SELECT run_mode FROM phase")).scalars())
        submission = conn.execute(text("SELECT model_path, model_filename, run_mode FROM submission")).one()
        evaluations = conn.execute(text("SELECT count(*) FROM evaluation")).scalar_one()
    command.downgrade(cfg, "0009")
    with engine.connect() as conn:
        after_down = conn.execute(text("SELECT count(*) FROM evaluation")).scalar_one()
    engine.dispose()
    assert {k: bool(v) for k, v in shown.items()} == {1: True, 2: False, 3: False}
    assert modes == {"exec"}
    assert tuple(submission) == (None, "", None)
    assert evaluations == 1
    assert after_down == 1


@pytest.mark.parametrize("backend_name", ["postgresql", "sqlite"])
def test_phases_get_the_default_gpu_class_and_no_budget_and_no_row_is_lost(
    backend_name: str, create_database: Callable[[str], str], alembic_cfg: Callable[[str], Config]
) -> None:
    """0013 adds gpu_class (gpu for every existing phase), gpu_budget_hours and team_share (none) in place, and
    takes them away again without losing a phase's submissions or evaluations (SQLite cascades on a rebuild)."""
    url = create_database(backend_name)
    cfg = alembic_cfg(url)
    command.upgrade(cfg, "0012")
    engine = create_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO challenge (id, slug, title, description, is_published, requires_approval, created_at, "
                "updated_at) VALUES (1, 'c', 'C', '', true, false, :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO phase (id, challenge_id, slug, title, kind, allowed_kinds, failed_count_towards_quota, "
                "max_active_per_team, leaderboard_visibility, entry_policy, ranking_metric, time_limit_s, "
                "memory_limit_mb, evaluation_version, scoring_options, show_logs, run_mode, created_at, updated_at) "
                "VALUES (1, 1, 'p', 'P', 'preliminary', '[\"model\"]', true, 1, 'public', 'best', 'f1', 60, 1024, 1, "
                "'{}', false, 'exec', :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO team (id, name, name_skeleton, contact_email, is_approved, is_disqualified, created_at, "
                "updated_at) VALUES (1, 't', 't', 't@example.org', true, false, :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO submission (id, phase_id, team_id, kind, file_path, original_filename, sha256, "
                "size_bytes, method_name, description, paper_url, is_baseline, is_hidden, is_disqualified, "
                "model_filename, created_at, updated_at) VALUES (1, 1, 1, 'model', 'x', '', :h, 1, '', '', '', "
                "false, false, false, '', :t, :t)"
            ),
            {"h": "0" * 64, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO evaluation (id, submission_id, version, status, attempt, queued_at, progress, "
                "progress_message, error_message, error_detail, gpu_seconds, infrastructure_failure, created_at, "
                "updated_at) VALUES (1, 1, 1, 'succeeded', 1, :t, 1, '', '', '', 12.5, false, :t, :t)"
            ),
            {"t": now},
        )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        phase = conn.execute(text("SELECT gpu_class, gpu_budget_hours, team_share FROM phase")).one()
        kept = conn.execute(text("SELECT count(*) FROM evaluation")).scalar_one()
    command.downgrade(cfg, "0012")
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("phase")}
        after_down = conn.execute(text("SELECT count(*) FROM evaluation")).scalar_one()
        seconds = conn.execute(text("SELECT gpu_seconds FROM evaluation")).scalar_one()
    command.upgrade(cfg, "head")
    engine.dispose()
    assert tuple(phase) == ("gpu", None, None)
    assert kept == 1
    assert not columns & {"gpu_class", "gpu_budget_hours", "team_share"}
    assert (after_down, seconds) == (1, 12.5)
