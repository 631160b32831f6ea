"""What a run of a container submission is given from the database: its model tarball, the run mode (the
submission's, else the phase's), the phase's log policy and where the log tails are kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

import worker.tasks as tasks
from app.settings import Settings
from app.storage import evaluation_logs_dir
from app.tables import (
    Challenge,
    Evaluation,
    Phase,
    RunMode,
    Submission,
    SubmissionKind,
    Team,
    TestSet,
)


def test_load_input_passes_model_run_mode_and_log_policy(
    db_session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)
    test_set = TestSet(
        name="s",
        manifest_path=str(tmp_path / "set" / "manifest.json"),
        manifest_sha256="0" * 64,
        scoring_digest="d" * 64,
        case_count=0,
        cases={},
    )
    phase = Phase(
        challenge=Challenge(slug="c", title="C"),
        slug="p",
        title="P",
        test_set=test_set,
        allowed_kinds=["container"],
        show_logs=True,
        run_mode=RunMode.EXEC,
    )
    team = Team(name="t", name_skeleton="t", contact_email="t@example.org")
    common = {"phase": phase, "team": team, "kind": SubmissionKind.CONTAINER, "sha256": "1" * 64, "size_bytes": 1}
    with_model = Submission(
        **common,
        file_path="submissions/1/image.tar",
        model_path="submissions/1/m.model.tar.gz",
        model_sha256="2" * 64,
        run_mode=RunMode.INVOKE,
    )
    plain = Submission(**common, file_path="submissions/1/image2.tar")
    db_session.add_all([with_model, plain])
    db_session.flush()
    evaluations = [Evaluation(submission_id=s.id) for s in (with_model, plain)]
    db_session.add_all(evaluations)
    db_session.flush()

    inp, _options, basis = tasks._load_input(db_session, evaluations[0].id)
    assert inp.model_archive == settings.storage_path / "submissions/1/m.model.tar.gz"
    assert (inp.run_mode, inp.show_logs) == ("invoke", True)
    assert inp.logs_dir == evaluation_logs_dir(settings.storage_path, evaluations[0].id)
    assert basis.model_sha256 == "2" * 64

    inp, _options, basis = tasks._load_input(db_session, evaluations[1].id)
    assert (inp.model_archive, inp.run_mode, basis.model_sha256) == (None, "exec", None)
    phase.show_logs = False
    db_session.flush()
    assert tasks._load_input(db_session, evaluations[1].id)[0].show_logs is False
