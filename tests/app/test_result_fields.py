"""The metric fields of a result are declared once (worker.result_fields); the Result table, the API schemas,
the leaderboard CSV and the organisers' results CSV carry exactly those fields, in the list's order."""

from __future__ import annotations

from sqlalchemy import Float, Integer

from app.admin.service import DETECTION_METRICS
from app.leaderboard.schemas import LeaderboardEntry
from app.leaderboard.service import leaderboard_csv
from app.result_schema import board_field_names
from app.submissions.schemas import MetricsRead, ResultRead
from app.tables import Result
from worker.result_fields import BOARD_CSV_LEADING, METRIC_NAMES, RESULT_FIELDS, board_csv_trailing, fields_of


def test_the_result_table_has_one_column_per_field_with_its_type_and_nullability() -> None:
    columns = Result.__table__.columns
    for f in RESULT_FIELDS:
        column = columns[f.name]
        assert isinstance(column.type, Integer if f.kind == "int" else Float), f.name
        assert column.nullable is f.nullable, f.name


def test_the_schemas_carry_every_field_in_list_order_with_its_description() -> None:
    assert [n for n in ResultRead.model_fields if n in METRIC_NAMES] == list(METRIC_NAMES)
    assert list(MetricsRead.model_fields) == [f.name for f in fields_of("detection")]
    entry_metrics = [n for n in LeaderboardEntry.model_fields if n in board_field_names()]
    assert entry_metrics == list(board_field_names())
    assert "balanced_accuracy_ci_low" in entry_metrics  # a field with board_interval brings its interval
    for model in (ResultRead, LeaderboardEntry):
        for f in RESULT_FIELDS:
            info = model.model_fields[f.name]
            assert info.description == f.description
            assert info.is_required() is not f.nullable


def test_the_json_keys_keep_the_task_between_detection_and_classification_fields() -> None:
    keys = list(ResultRead.model_fields)
    detection = [f.name for f in fields_of("detection")]
    classification = [f.name for f in fields_of("classification")]
    assert keys[: len(detection) + 1 + len(classification)] == [*detection, "task", *classification]


def test_every_metric_is_a_column_of_the_leaderboard_csv_once() -> None:
    assert set(BOARD_CSV_LEADING) <= set(METRIC_NAMES)
    assert sorted([*BOARD_CSV_LEADING, *board_csv_trailing()]) == sorted(METRIC_NAMES)
    header = leaderboard_csv_header()
    for name in METRIC_NAMES:
        assert header.count(name) == 1, name


def leaderboard_csv_header() -> list[str]:
    from app.leaderboard.schemas import LeaderboardRead
    from app.tables import EntryPolicy, LeaderboardVisibility, RankingMetric

    board = LeaderboardRead(
        challenge_slug="c",
        phase_id=1,
        phase_slug="p",
        phase_title="P",
        visibility=LeaderboardVisibility.PUBLIC,
        scores_visible=True,
        entry_policy=EntryPolicy.BEST,
        ranking_metric=RankingMetric.F1,
        evaluation_version=1,
        scoring_fingerprint=None,
        group_labels=[],
        entries=[],
    )
    return leaderboard_csv(board).splitlines()[0].split(",")


def test_the_organisers_results_show_the_fields_every_result_has() -> None:
    assert tuple(f.name for f in RESULT_FIELDS if f.task == "detection") == DETECTION_METRICS
    assert "f1_ci_low" in DETECTION_METRICS


def test_the_clients_result_table_has_a_column_per_shown_field_and_the_interval_beside_f1() -> None:
    from rich.console import Console

    from app.cli import client
    from worker.result_fields import shown_fields

    groups = {"A": {"tp": 3, "fp": 1, "fn": 2, "precision": 0.75, "recall": 0.6, "f1": 0.667, "f1_ci_low": 0.5,
                    "f1_ci_high": 0.8}}  # fmt: skip
    result = {"tp": 3, "fp": 1, "fn": 2, "precision": 0.75, "recall": 0.6, "f1": 0.667, "ap": None, "groups": groups}
    table = client.result_table(result)
    assert [c.header for c in table.columns] == ["scanner", *(f.label for f in shown_fields("detection"))]
    out = Console(width=200, record=True)
    out.print(table)
    assert "0.667 [0.500, 0.800]" in out.export_text()


ADDED_METRIC = r"""
import json
import worker.result_fields as rf

added = rf.ResultField("froc_auc", "float", True, "Area under the FROC curve.", "score", "FROC AUC")
rf.RESULT_FIELDS = (*rf.RESULT_FIELDS, added)
rf.METRIC_NAMES = tuple(f.name for f in rf.RESULT_FIELDS)

from app.leaderboard.schemas import LeaderboardEntry, LeaderboardRead
from app.leaderboard.service import leaderboard_csv
from app.tables import Result
from app.submissions.schemas import ResultRead

board = LeaderboardRead(challenge_slug="c", phase_id=1, phase_slug="p", phase_title="P", visibility="public",
    scores_visible=True, entry_policy="best", ranking_metric="f1", evaluation_version=1, scoring_fingerprint=None,
    group_labels=[], entries=[])
column = Result.__table__.columns["froc_auc"]
print(json.dumps({
    "column": [str(column.type), column.nullable],
    "result_read": ResultRead.model_fields["froc_auc"].description,
    "entry": LeaderboardEntry.model_fields["froc_auc"].description,
    "csv_last_metric": leaderboard_csv(board).splitlines()[0].split(",")[-1],
}))
"""


def test_a_metric_appended_to_the_list_reaches_the_table_the_schemas_and_the_csv() -> None:
    """Run in a fresh interpreter: the list is read when app.tables and the schemas are imported."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ADDED_METRIC], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found == {
        "column": ["FLOAT", True],
        "result_read": "Area under the FROC curve.",
        "entry": "Area under the FROC curve.",
        "csv_last_metric": "froc_auc",
    }
