"""The offline report of a phase: one self-contained HTML file (styles inline, plots as inline SVG, no script,
no link it needs) with the leaderboard, the ranking analysis and the items the BIAS guideline asks a challenge
paper to state. Served by /api/v1/phases/<id>/report.html and written by `midog-eval report`.
Must not import the worker."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.deps import DbSession, OptionalPrincipal
from app.leaderboard import service as leaderboard
from app.openapi import errors
from app.pages.analysis_plots import analysis_context
from app.pages.templates import PACKAGE_DIR, templates
from app.scoring import canonical_options
from app.security_headers import report_policy
from app.tables import Phase, TestSet, utcnow
from app.types import IdPath


def software_version() -> str:
    try:
        return metadata.version("midog-eval")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "(unreleased)"


def report_css() -> str:
    return (PACKAGE_DIR / "static" / "style.css").read_text(encoding="utf-8")


def bias_items(session: Session, phase_id: int, doc: dict[str, Any], board: Any) -> dict[str, str]:
    """The BIAS reporting items, in words, from the phase's settings and the analysis."""
    phase = session.get(Phase, phase_id)
    assert phase is not None  # the board was found
    options = canonical_options(phase.scoring_options)
    test_set = session.scalar(select(TestSet).where(TestSet.id == phase.test_set_id))
    radius_um = float(options["radius_mm"]) * 1000
    composition = "; ".join(f"{g}: {n} cases" for g, n in (doc.get("cases_per_group") or {}).items())
    seen = doc.get("seen_groups") or []
    return {
        "metrics": (
            f"F1 of detections matched to reference mitotic figures within {radius_um:g} µm (greedy, official MIDOG "
            f"rules {options['rules']}), with true and false positives and false negatives summed over all cases "
            "before F1 is computed (pooled); precision, recall and COCO-style AP beside it; F1 per "
            f"{options['group_key']}."
        ),
        "ranking": (
            f"Entries ranked by {board.ranking_metric.value} ({board.entry_policy.value} submission per team); "
            "equal scores share a rank; baselines run by the organisers take no rank."
        ),
        "missing": (
            "A submission must hold every test case: one with a case missing, unreadable or outside the image is "
            "refused with the case named and is never ranked; a case with no detection counts as all its figures "
            "missed."
        ),
        "uncertainty": (
            f"{doc.get('resamples', '–')} bootstrap resamples of the test cases, drawn within each "
            f"{options['group_key']} (seed {doc.get('seed', '–')}): 95% percentile intervals of F1, bootstrap rank "
            "distributions with Kendall's tau, pairwise one-sided paired-bootstrap tests with Holm's correction at "
            f"{doc.get('alpha', 0.05)}, and the ranking by mean {options['group_key']} rank beside the pooled one."
            if doc.get("available")
            else "No analysis: " + str(doc.get("reason", "none available"))
        ),
        "test_set": (
            f"Test set {test_set.name if test_set else '–'} ({test_set.case_count if test_set else 0} cases). "
            f"{composition}." + (f" Scanners covered by the training data: {', '.join(seen)}." if seen else "")
        ),
        "reproducibility": (
            f"Scoring fingerprint {board.scoring_fingerprint or '–'} (scorer version, scored options and test-set "
            "digest); every ranked result carries it."
        ),
        "software_version": software_version(),
        "generated_at": utcnow().strftime("%Y-%m-%d %H:%M UTC"),
    }


def report_html(session: Session, *, phase_id: int, as_organiser: bool) -> str:
    """The report as one HTML document (NotFound for a phase the caller may not see)."""
    data = json.loads(leaderboard.get_analysis_json(session, phase_id=phase_id, as_organiser=as_organiser))
    doc = data.pop("analysis")
    board = leaderboard.get_leaderboard(session, phase_id=phase_id, as_organiser=as_organiser)
    context = {
        "head": data,
        "board": board,
        "css": Markup(report_css()),  # the package's own stylesheet, verbatim (the CSP hash is of these bytes)
        "bias": bias_items(session, phase_id, doc, board),
        **analysis_context(doc, csv_base=None),
    }
    return templates.env.get_template("report.html").render(context)


# The offline report is served under the API's path with the leaderboard's tag (app.main includes this router
# right after app.leaderboard.router); it lives here, beside its renderer, so that no router imports a page.
api_router = APIRouter(prefix="/api/v1", tags=["leaderboard"])


@api_router.get(
    "/phases/{phase_id}/report.html",
    summary="Offline report: one self-contained HTML file with the board, the analysis and the BIAS items",
    response_class=Response,
    responses={
        200: {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
        **errors(401, 404, 422, 503),
    },
)
def get_report(db: DbSession, principal: OptionalPrincipal, phase_id: IdPath) -> Response:
    as_organiser = principal is not None and principal.is_organiser
    return Response(
        report_html(db, phase_id=phase_id, as_organiser=as_organiser),
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": report_policy(report_css()),
            "Content-Disposition": f'inline; filename="report-phase-{phase_id}.html"',
        },
    )
