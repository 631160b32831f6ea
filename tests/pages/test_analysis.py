"""The ranking analysis served with a board: its JSON agrees with the counts computed by hand and with the
scoring core's ranking functions, its CSVs carry the plots' numbers, its page and the offline report render
accessible SVG without scripts, the seen/unseen gap reaches the leaderboard, and a hidden phase shows nothing."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).parent))

from seed import CASE_SHARES, ENTRIES, SCANNERS, SEEN, Seeded, case_names

from app.main import create_app
from app.settings import Settings
from worker.evaluation.ranking import bootstrap_ranks, pairwise_significance
from worker.evaluation.types import Rules

RANKED = [team for team, (_m, _f, baseline) in ENTRIES.items() if not baseline]


@pytest.fixture
def client(tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, robustness_resamples=300)
    with TestClient(create_app(settings, session_factory=session_factory)) as c:
        yield c


def _analysis(client: TestClient, phase_id: int) -> dict:
    response = client.get(f"/api/v1/phases/{phase_id}/analysis")
    assert response.status_code == 200, response.text
    return response.json()


def _counts(team: str) -> tuple[np.ndarray, list[str]]:
    """(cases, 3) counts of a team's seeded entry in case-name order (the seed's rule: FP = FN = 40 - TP per
    scanner, split over its cases), and each case's scanner."""
    names, labels, rows = [], [], []
    f1s = ENTRIES[team][1]
    for index, (scanner, f1) in enumerate(zip(SCANNERS, f1s, strict=True)):
        tp = round(f1 * 40)
        fp = 40 - tp
        for name, share_tp, share_fp in zip(case_names(index), _split(tp), _split(fp), strict=True):
            names.append(name)
            labels.append(scanner)
            rows.append([share_tp, share_fp, share_fp])
    order = np.argsort(names)
    return np.asarray(rows)[order], [labels[i] for i in order]


def _split(count: int) -> list[int]:
    parts = [round(count * share) for share in CASE_SHARES[:-1]]
    return [*parts, count - sum(parts)]


def test_analysis_json_matches_hand_counts_and_ranking_functions(client: TestClient, seeded: Seeded) -> None:
    board = client.get(f"/api/v1/phases/{seeded.public_phase_id}/leaderboard").json()
    doc = _analysis(client, seeded.public_phase_id)["analysis"]
    assert doc["available"] is True
    assert doc["groups"] == sorted(SCANNERS)
    assert doc["seen_groups"] == list(SEEN)
    assert doc["cases_per_group"] == dict.fromkeys(sorted(SCANNERS), len(CASE_SHARES))
    names = [e["team_name"] for e in doc["entries"]]
    assert set(names) == set(ENTRIES)
    ranked_names = [doc["entries"][i]["team_name"] for i in doc["ranked"]]
    assert ranked_names == [e["team_name"] for e in board["entries"] if not e["is_baseline"]]

    # heat map: F1 per scanner by hand, 2 TP / (2 TP + FP + FN) with FP = FN = 40 - TP
    for e, name in enumerate(names):
        for g, scanner in enumerate(doc["groups"]):
            tp = round(ENTRIES[name][1][SCANNERS.index(scanner)] * 40)
            low, high = doc["heatmap"]["ci95"][e][g]
            value = doc["heatmap"]["f1"][e][g]
            # midog2022 formulas carry eps = 1e-6; the difference from the plain formula is below 1e-6
            assert value == pytest.approx(2 * tp / (2 * tp + 2 * (40 - tp)), abs=1e-6), (name, scanner)
            assert low <= value + 1e-9
            assert value - 1e-9 <= high

    # seen/unseen by hand: pooled over Scanner A and B, and over C and D
    for e, name in enumerate(names):
        f1s = dict(zip(SCANNERS, ENTRIES[name][1], strict=True))
        seen_tp = sum(round(f1s[s] * 40) for s in SEEN)
        unseen_tp = sum(round(f1s[s] * 40) for s in SCANNERS if s not in SEEN)
        row = doc["generalisation"][e]
        assert row["seen_f1"] == pytest.approx(seen_tp / 80, abs=1e-6)
        assert row["unseen_f1"] == pytest.approx(unseen_tp / 80, abs=1e-6)
        assert row["gap"] == pytest.approx(row["seen_f1"] - row["unseen_f1"])
        assert row["seen_cases"] == 6
        assert row["unseen_cases"] == 6

    # rank statistics equal the scoring core's functions on the same counts, seed and strata
    counts = []
    labels: list[str] = []
    for name in ranked_names:
        c, labels = _counts(name)
        counts.append(c)
    stacked = np.stack(counts)
    boot = bootstrap_ranks(stacked, doc["resamples"], doc["seed"], Rules(doc["rules"]), stratify=np.array(labels))
    assert doc["ranking"]["frequencies"] == boot.frequencies.tolist()
    assert doc["ranking"]["ranks"] == boot.ranks.tolist()
    sig = pairwise_significance(
        stacked, doc["significance"]["resamples"], doc["seed"], Rules(doc["rules"]), stratify=np.array(labels)
    )
    assert doc["significance"]["better"] == sig.better.tolist()
    # the significance test gets enough resamples for Holm over 3 x 2 ordered pairs to reach alpha / 4
    assert doc["significance"]["min_adjusted_p"] <= 0.05 / 4


def test_leaderboard_entries_carry_the_seen_unseen_gap(client: TestClient, seeded: Seeded) -> None:
    board = client.get(f"/api/v1/phases/{seeded.public_phase_id}/leaderboard").json()
    doc = _analysis(client, seeded.public_phase_id)["analysis"]
    by_id = {e["submission_id"]: g for e, g in zip(doc["entries"], doc["generalisation"], strict=True)}
    for entry in board["entries"]:
        assert entry["generalisation"] == by_id[entry["submission_id"]]
        low, high = entry["generalisation"]["gap_ci95"]
        assert low <= entry["generalisation"]["gap"] <= high
    page = client.get(f"/phases/{seeded.public_phase_id}/leaderboard").text
    assert 'data-key="gap"' in page
    assert "F1 unseen" in page
    assert f'href="/phases/{seeded.public_phase_id}/analysis"' in page


def test_csv_tables_carry_the_plot_numbers(client: TestClient, seeded: Seeded) -> None:
    doc = _analysis(client, seeded.public_phase_id)["analysis"]
    expected_rows = {
        "ranks": len(RANKED),
        "significance": len(RANKED) * (len(RANKED) - 1),
        "rank-aggregation": len(RANKED),
        "heatmap": len(ENTRIES) * len(SCANNERS),
        "generalisation": len(ENTRIES),
    }
    for table, rows in expected_rows.items():
        response = client.get(f"/api/v1/phases/{seeded.public_phase_id}/analysis/{table}.csv")
        assert response.status_code == 200, (table, response.text)
        assert response.headers["content-type"].startswith("text/csv")
        parsed = list(csv.DictReader(io.StringIO(response.text)))
        assert len(parsed) == rows, table
    heat = list(
        csv.DictReader(io.StringIO(client.get(f"/api/v1/phases/{seeded.public_phase_id}/analysis/heatmap.csv").text))
    )
    first = heat[0]
    e = next(i for i, entry in enumerate(doc["entries"]) if str(entry["submission_id"]) == first["submission_id"])
    g = doc["groups"].index(first["group"])
    assert float(first["f1"]) == pytest.approx(doc["heatmap"]["f1"][e][g])
    assert client.get(f"/api/v1/phases/{seeded.public_phase_id}/analysis/secrets.csv").status_code == 422


def test_hidden_phase_analysis_shows_nothing(client: TestClient, seeded: Seeded) -> None:
    data = _analysis(client, seeded.hidden_phase_id)
    assert data["scores_visible"] is False
    assert data["analysis"] == {"available": False, "reason": "the phase hides its scores"}
    body = client.get(f"/api/v1/phases/{seeded.hidden_phase_id}/analysis/heatmap.csv").text
    assert body.strip() == ""
    page = client.get(f"/phases/{seeded.hidden_phase_id}/analysis").text
    assert "hides its scores" in page
    assert "<svg" not in page
    report = client.get(f"/api/v1/phases/{seeded.hidden_phase_id}/report.html").text
    assert "0.987" not in report
    assert "<svg" not in report


def test_analysis_page_renders_accessible_svg(client: TestClient, seeded: Seeded) -> None:
    response = client.get(f"/phases/{seeded.public_phase_id}/analysis")
    assert response.status_code == 200
    page = response.text
    for plot in ("blob-plot", "significance-map", "rank-comparison", "heatmap", "gap-plot"):
        match = re.search(rf'<svg id="{plot}"[^>]*>', page)
        assert match, plot
        assert 'role="img"' in match.group(0)
        assert f'aria-labelledby="{plot}-title {plot}-desc"' in match.group(0)
        assert f'<title id="{plot}-title">' in page
        assert f'<desc id="{plot}-desc">' in page
    assert "<script" not in page.split("</main>")[0]
    assert ' style="' not in page  # the CSP allows no inline style
    for table in ("ranks", "significance", "rank-aggregation", "heatmap", "generalisation"):
        assert f"/api/v1/phases/{seeded.public_phase_id}/analysis/{table}.csv" in page


def test_report_is_self_contained(client: TestClient, seeded: Seeded) -> None:
    response = client.get(f"/api/v1/phases/{seeded.public_phase_id}/report.html")
    assert response.status_code == 200
    html = response.text
    assert "<script" not in html
    assert not re.search(r'(src|href)="(?!#)', html), "the report links to nothing outside itself"
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert style
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in response.headers["content-security-policy"]
    for item in ("Metrics", "Ranking method", "Missing results", "Uncertainty analysis", "Test-set composition"):
        assert f"<dt>{item}</dt>" in html
    assert "within 7.5 µm" in html
    assert "Scanner A: 3 cases" in html
    for team in ENTRIES:
        assert team in html
    assert html.count("<svg") == 5


def test_submission_page_shows_the_representation_shift_beside_f1(
    client: TestClient, seeded: Seeded, db_session: Session
) -> None:
    from sqlalchemy import update

    from app.tables import Result

    representation = {
        "available": True,
        "cases": 12,
        "channels": 32,
        "groups": list(SCANNERS),
        "reference": "seen groups (Scanner A, Scanner B)",
        "scanner_classifier": {"balanced_accuracy": 0.75, "chance": 0.25, "method": "nearest class mean"},
        "shift": {"Scanner C": {"wasserstein": 0.125, "cases": 3}, "Scanner D": {"wasserstein": 0.0625, "cases": 3}},
        "mean_shift": 0.09375,
        "caveat": "Describes the model's features, not its accuracy (Aubreville et al., MIDL 2021).",
    }
    aurora = seeded.submission_ids["Aurora"]
    db_session.execute(update(Result).where(Result.submission_id == aurora).values(representation=representation))
    db_session.commit()
    page = client.get(f"/submissions/{aurora}").text
    assert 'id="representation"' in page
    assert "<strong>0.750</strong> (chance 0.250" in page
    assert re.findall(r'<td class="shift">([^<]*)</td>', page) == ["reference", "reference", "0.125", "0.062"]
    assert "MIDL 2021" in page
    other = client.get(f"/submissions/{seeded.submission_ids['Borealis']}").text
    assert 'id="representation"' not in other

    db_session.execute(
        update(Result)
        .where(Result.submission_id == aurora)
        .values(representation={"available": False, "reason": "case 101.tiff: no features were written"})
    )
    db_session.commit()
    page = client.get(f"/submissions/{aurora}").text
    assert "not measured (case 101.tiff: no features were written)" in page
    assert 'class="shift"' not in page
