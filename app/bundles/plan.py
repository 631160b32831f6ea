"""What applying a bundle changes on a server, as a list of steps (organiser API calls), and a running
challenge written back as a bundle.

Rules:
- Test sets are matched by name. A missing one is registered from its path; one that exists must live at the
  same path (a registered set never changes: give a changed set a new name).
- The challenge is matched by slug, phases by slug within it. Missing ones are created; for existing ones only
  the fields the bundle states and that differ are changed (one PATCH each). Fields a bundle leaves out keep
  their value, or the server's default on creation. Phases are never deleted.
- `scoring_options` compare option by option; changing a scored phase's scoring is refused by the server
  (409) unless the organiser re-evaluates, as through the API.
- Applying the same bundle twice: the second plan is empty.
Pure functions of the bundle and of what the organiser API returned; no HTTP here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.bundles.schema import Bundle, BundlePhase

# organiser API reads that become bundle fields unchanged
CHALLENGE_FIELDS = ("title", "description", "requires_approval", "is_published")
PHASE_FIELDS = (
    "title",
    "kind",
    "opens_at",
    "closes_at",
    "allowed_kinds",
    "daily_quota",
    "phase_quota",
    "failed_count_towards_quota",
    "max_active_per_team",
    "leaderboard_visibility",
    "shown_groups",
    "seen_groups",
    "entry_policy",
    "ranking_metric",
    "time_limit_s",
    "memory_limit_mb",
    "scoring_options",
    "show_logs",
    "run_mode",
    "gpu_class",
    "gpu_budget_hours",
    "team_share",
)


@dataclass
class Step:
    """One organiser API call. `body` may name bundle references (test sets, phases) resolved at apply time:
    {"test_set": NAME} becomes test_set_id, {"parent_phase": SLUG} parent_phase_id."""

    method: str
    path: str  # under /api/v1/admin; "{challenge}" stands for the challenge's id once it exists
    body: dict[str, Any]
    summary: str
    creates: str = ""  # "test_set:NAME", "challenge", "phase:SLUG": the id it returns is remembered
    refs: dict[str, str] = field(default_factory=dict)


def _same(key: str, wanted: Any, current: Any) -> bool:
    if key in ("opens_at", "closes_at") and wanted is not None and current is not None:
        return datetime.fromisoformat(str(wanted)) == datetime.fromisoformat(str(current))
    if isinstance(wanted, float | int) and isinstance(current, float | int) and not isinstance(wanted, bool):
        return float(wanted) == float(current)
    return bool(wanted == current)


def _changes(wanted: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The stated fields whose value differs; scoring_options option by option."""
    changed: dict[str, Any] = {}
    for key, value in wanted.items():
        if key == "scoring_options":
            options = {k: v for k, v in value.items() if not _same(k, v, (current.get(key) or {}).get(k))}
            if options:
                changed[key] = options
        elif not _same(key, value, current.get(key)):
            changed[key] = value
    return changed


def _phase_body(phase: BundlePhase) -> tuple[dict[str, Any], dict[str, str]]:
    """The stated fields of a bundle phase as API JSON, and its named references."""
    body = phase.model_dump(mode="json", exclude_unset=True, exclude={"test_set", "parent_phase", "slug"})
    refs = {}
    if phase.test_set is not None:
        refs["test_set"] = phase.test_set
    if phase.parent_phase is not None:
        refs["parent_phase"] = phase.parent_phase
    return body, refs


def make_plan(bundle: Bundle, *, challenges: list[dict[str, Any]], test_sets: list[dict[str, Any]]) -> list[Step]:
    """The steps that make the server (its `challenges` and `test_sets`, as GET /admin/... return them) match
    `bundle`. Raises ValueError for a conflict no step can resolve."""
    steps: list[Step] = []
    known = {t["name"]: t for t in test_sets}
    for wanted in bundle.test_sets:
        have = known.get(wanted.name)
        if have is None:
            body = wanted.model_dump(mode="json")
            steps.append(Step("POST", "/test-sets", body, f"register test set {wanted.name!r} from {wanted.path}",
                              creates=f"test_set:{wanted.name}"))  # fmt: skip
        elif Path(have["manifest_path"]).parent != Path(wanted.path):
            raise ValueError(
                f"test_sets: {wanted.name!r} is registered from {Path(have['manifest_path']).parent}, not "
                f"{wanted.path}; a registered test set never changes: give the new one another name"
            )
    for phase in bundle.phases:
        if (
            phase.test_set is not None
            and phase.test_set not in known
            and phase.test_set not in {t.name for t in bundle.test_sets}
        ):
            raise ValueError(f"phases: {phase.slug!r} uses test set {phase.test_set!r}, which is neither in the "
                             "bundle nor on the server")  # fmt: skip
    slug = bundle.challenge.slug
    current = next((c for c in challenges if c["slug"] == slug), None)
    stated = bundle.challenge.model_dump(mode="json", exclude_unset=True, exclude={"slug"})
    if current is None:
        steps.append(Step("POST", "/challenges", bundle.challenge.model_dump(mode="json"),
                          f"create challenge {slug!r}", creates="challenge"))  # fmt: skip
        phases_now: dict[str, dict[str, Any]] = {}
    else:
        changed = _changes(stated, current)
        if changed:
            steps.append(Step("PATCH", "/challenges/{challenge}", changed,
                              f"challenge {slug!r}: change {', '.join(sorted(changed))}"))  # fmt: skip
        phases_now = {p["slug"]: p for p in current["phases"]}
    names_by_id = {t["id"]: t["name"] for t in test_sets}
    for phase in bundle.phases:
        body, refs = _phase_body(phase)
        have = phases_now.get(phase.slug)
        if have is None:
            steps.append(Step("POST", "/challenges/{challenge}/phases", {"slug": phase.slug, **body},
                              f"create phase {phase.slug!r}", creates=f"phase:{phase.slug}", refs=refs))  # fmt: skip
            continue
        changed = _changes(body, have)
        slug_by_id = {p["id"]: s for s, p in phases_now.items()}
        if refs.get("test_set") is not None and names_by_id.get(have["test_set_id"]) != refs["test_set"]:
            changed["test_set"] = refs["test_set"]
        if refs.get("parent_phase") is not None and slug_by_id.get(have["parent_phase_id"]) != refs["parent_phase"]:
            changed["parent_phase"] = refs["parent_phase"]
        if changed:
            moved: dict[str, str] = {k: str(changed.pop(k)) for k in ("test_set", "parent_phase") if k in changed}
            steps.append(Step("PATCH", f"/phases/{have['id']}", changed,
                              f"phase {phase.slug!r}: change {', '.join(sorted([*changed, *moved]))}",
                              refs=moved))  # fmt: skip
    return steps


def export_bundle(challenge: dict[str, Any], test_sets: list[dict[str, Any]]) -> dict[str, Any]:
    """A running challenge (GET /admin/challenges item) and the server's test sets as a bundle document:
    every phase field stated, test sets and parent phases named, ids left out."""
    by_id = {t["id"]: t for t in test_sets}
    phase_slugs = {p["id"]: p["slug"] for p in challenge["phases"]}
    used = [by_id[p["test_set_id"]] for p in challenge["phases"] if p.get("test_set_id") in by_id]
    phases = []
    for p in challenge["phases"]:
        doc: dict[str, Any] = {"slug": p["slug"], **{k: p[k] for k in PHASE_FIELDS}}
        if p.get("test_set_id") in by_id:
            doc["test_set"] = by_id[p["test_set_id"]]["name"]
        if p.get("parent_phase_id") in phase_slugs:
            doc["parent_phase"] = phase_slugs[p["parent_phase_id"]]
        phases.append(doc)
    unique = {t["name"]: t for t in used}
    return {
        "version": 1,
        "challenge": {"slug": challenge["slug"], **{k: challenge[k] for k in CHALLENGE_FIELDS}},
        "test_sets": [
            {"name": t["name"], "path": str(Path(t["manifest_path"]).parent), "description": t["description"]}
            for t in unique.values()
        ],
        "phases": phases,
    }
