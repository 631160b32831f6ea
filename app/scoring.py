"""A phase's scoring options and its scoring fingerprint: what makes two results comparable.

Two results may stand on one board only if they were produced by the same scorer version, under the same
scored options, on the same test-set content. Their fingerprint is the sha256 of exactly those three things:
- `SCORER_VERSION` of the scoring core (worker.evaluation), bumped whenever a change can move a number;
- the options in `SCORED_OPTIONS`, with their defaults filled in (options that only change how a run is
  carried out, such as sharding, are left out: they never change a score); options added to the list later
  (`LATER_OPTIONS`) count only when set to something other than their default, so adding one leaves every
  existing phase's fingerprint as it was;
- the test set's scoring digest (manifest.json and ground truth, worker.datasets.manifest.scoring_digest).

Rule for maintainers: a new scored option goes into LATER_OPTIONS with the default that reproduces the former
behaviour; a name added to SCORED_OPTIONS itself would change every phase's fingerprint.

Imports pydantic and worker.evaluation only: the API and the workers compute fingerprints the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from worker.evaluation import SCORER_VERSION

__all__ = [
    "SCORER_VERSION",
    "ScoringOptions",
    "canonical_options",
    "changed_scored_options",
    "fingerprint",
    "options_sha256",
]

# The same bounds as app.types.GroupLabel (that module imports FastAPI, which the workers must not).
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]

SCORED_OPTIONS = ("rules", "radius_mm", "group_key", "bootstrap", "seed", "input_layout")
# Scored options introduced after the first release: hashed only when not at their default.
LATER_OPTIONS = ("task",)


class ScoringOptions(BaseModel):
    """How the workers run and score this phase's submissions."""

    model_config = ConfigDict(extra="forbid")

    task: Annotated[
        Literal["detection", "classification"],
        Field(
            description="detection: points per image (MIDOG 2021-2025 Track 1); classification: atypical versus "
            "normal mitotic figures in stacks of patches (MIDOG 2025 Track 2). The test set must be of this task."
        ),
    ] = "detection"
    rules: Annotated[
        Literal["midog2022", "midog2021", "midog2025"],
        Field(
            description="Detection: the official evaluation reproduced: midog2022 (F1, AP), midog2021, or "
            "midog2025 (Track 1: strict validation, FROC, groups by tumour domain and ROI type)."
        ),
    ] = "midog2022"
    bootstrap: Annotated[
        int, Field(ge=0, le=10_000, description="Bootstrap resamples over cases for the 95% F1 intervals (0: none).")
    ] = 1000
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    group_key: Annotated[Label, Field(description="Test-set label whose values are the leaderboard groups.")] = (
        "scanner"
    )
    radius_mm: Annotated[float, Field(gt=0, le=1.0, description="Hit radius in mm (inclusive).")] = 0.0075
    shard_by: Annotated[
        Label | None,
        Field(description="Split model/container runs into parallel shards by this label (never changes a score)."),
    ] = None
    hidden: Annotated[
        bool, Field(description="Hidden test data: participants see a one-line reason on failure, never logs.")
    ] = True
    input_layout: Annotated[
        Literal["2022", "2021"] | None,
        Field(description="Container input layout: 2022/2025 (/input/images/histopathology-roi-cropout/) or 2021."),
    ] = None


def canonical_options(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options as stored on a phase, every default filled in (JSON values, stable key order)."""
    return ScoringOptions.model_validate(dict(stored or {})).model_dump(mode="json")


def options_sha256(options: Mapping[str, Any]) -> str:
    """The sha256 of the scored options (canonical JSON; later options only when not at their default)."""
    canonical = canonical_options(options)
    defaults = ScoringOptions().model_dump(mode="json")
    scored = {name: canonical[name] for name in SCORED_OPTIONS}
    scored |= {name: canonical[name] for name in LATER_OPTIONS if canonical[name] != defaults[name]}
    return _sha256(scored)


def fingerprint(options: Mapping[str, Any] | None, test_set_digest: str, scorer_version: str = SCORER_VERSION) -> str:
    """The scoring fingerprint of results scored by `scorer_version` under `options` on that test set."""
    return _sha256(
        {"scorer_version": scorer_version, "options": options_sha256(options or {}), "test_set": test_set_digest}
    )


def changed_scored_options(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """The scored options whose value differs (defaults filled in on both sides)."""
    old, new = canonical_options(before), canonical_options(after)
    return [name for name in (*SCORED_OPTIONS, *LATER_OPTIONS) if old[name] != new[name]]


def _sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


PRIVATE_RUNTIME_KEYS = ("worker",)


def public_provenance(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """What anyone who may see a result may see of its provenance: all of it but the worker's host and
    process (of the run and of each shard)."""
    shown = dict(provenance or {})
    runtime = dict(shown.get("runtime") or {})
    for key in PRIVATE_RUNTIME_KEYS:
        runtime.pop(key, None)
    if isinstance(runtime.get("shards"), list):
        runtime["shards"] = [
            {k: v for k, v in shard.items() if k not in PRIVATE_RUNTIME_KEYS}
            for shard in runtime["shards"]
            if isinstance(shard, dict)
        ]
    if runtime:
        shown["runtime"] = runtime
    return shown
