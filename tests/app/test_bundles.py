"""Challenge bundles without a server: errors name the line and the field, the plan creates what is missing,
changes only the stated fields that differ, is empty once applied, and an export plans to nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.bundles.plan import PHASE_FIELDS, export_bundle, make_plan
from app.bundles.schema import BundlePhase
from app.bundles.source import BundleError, load_bundle

BUNDLE = """\
version: 1
challenge:
  slug: midog-bundle
  title: MIDOG from a bundle
test_sets:
  - name: synth-set
    path: sets/synth
phases:
  - slug: preliminary
    title: Preliminary
    test_set: synth-set
    daily_quota: 3
    seen_groups: [scanner-A]
    scoring_options:
      bootstrap: 200
  - slug: final
    title: Final
    kind: final
    test_set: synth-set
    parent_phase: preliminary
    opens_at: 2027-01-10T00:00:00Z
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "challenge.yaml"
    path.write_text(text)
    return path


def test_a_bundle_loads_with_paths_relative_to_it(tmp_path: Path) -> None:
    bundle = load_bundle(_write(tmp_path, BUNDLE))
    assert bundle.test_sets[0].path == str((tmp_path / "sets" / "synth").resolve())
    assert [p.slug for p in bundle.phases] == ["preliminary", "final"]
    assert bundle.phases[1].parent_phase == "preliminary"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("daily_quota: 3", "daily_quota: -1"), "challenge.yaml:12: phases[0].daily_quota: Input should be greater"),
        (("    daily_quota: 3", "    daily_qouta: 3"), "challenge.yaml:12: phases[0].daily_qouta: Extra inputs"),
        (("  title: MIDOG from a bundle\n", ""), "challenge.yaml:2: challenge.title: Field required"),
        (("test_set: synth-set\n    daily", "test_set_id: 4\n    daily"), "test_set_id: ids differ between servers"),
        (("parent_phase: preliminary", "parent_phase: later"), "'final' is gated by 'later', which must come before"),
        (("version: 1", "version: 2"), "challenge.yaml:1: version: Input should be 1"),
        (("seen_groups: [scanner-A]", "seen_groups: [scanner-A"), "challenge.yaml:14: not valid YAML"),
    ],
)
def test_errors_name_the_line_and_the_field(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    old, new = edit
    assert old in BUNDLE
    with pytest.raises(BundleError) as caught:
        load_bundle(_write(tmp_path, BUNDLE.replace(old, new, 1)))
    assert message in str(caught.value)


def _server_after(steps: list[Any], bundle_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a server would hold after the steps (the organiser API's read shapes, defaults filled)."""
    test_sets = [
        {"id": i + 1, "name": s.body["name"], "manifest_path": s.body["path"] + "/manifest.json", "description": ""}
        for i, s in enumerate(x for x in steps if x.creates.startswith("test_set:"))
    ]
    challenge = next(s for s in steps if s.creates == "challenge").body
    phases = []
    for i, step in enumerate(s for s in steps if s.creates.startswith("phase:")):
        defaults = BundlePhase(slug="x", title="x").model_dump(mode="json")
        defaults = {k: defaults[k] for k in PHASE_FIELDS}
        body = {**defaults, **step.body}
        body["scoring_options"] = {**defaults["scoring_options"], **step.body.get("scoring_options", {})}
        body["id"] = 10 + i
        body["test_set_id"] = 1 if step.refs.get("test_set") else None
        body["parent_phase_id"] = 10 if step.refs.get("parent_phase") else None
        phases.append(body)
    return [{"id": 1, **challenge, "phases": phases}], test_sets


def test_the_plan_creates_then_has_nothing_left_to_do(tmp_path: Path) -> None:
    path = _write(tmp_path, BUNDLE)
    bundle = load_bundle(path)
    steps = make_plan(bundle, challenges=[], test_sets=[])
    assert [s.summary.split(" ")[0:2] for s in steps] == [
        ["register", "test"],
        ["create", "challenge"],
        ["create", "phase"],
        ["create", "phase"],
    ]
    assert steps[2].body["scoring_options"] == {"bootstrap": 200}  # only what the bundle states
    assert steps[3].refs == {"test_set": "synth-set", "parent_phase": "preliminary"}
    challenges, test_sets = _server_after(steps, path)
    assert make_plan(bundle, challenges=challenges, test_sets=test_sets) == []

    changed = load_bundle(_write(tmp_path, BUNDLE.replace("daily_quota: 3", "daily_quota: 5")))
    (step,) = make_plan(changed, challenges=challenges, test_sets=test_sets)
    assert (step.method, step.path, step.body) == ("PATCH", "/phases/10", {"daily_quota": 5})

    options = load_bundle(_write(tmp_path, BUNDLE.replace("bootstrap: 200", "bootstrap: 200\n      rules: midog2021")))
    (step,) = make_plan(options, challenges=challenges, test_sets=test_sets)
    assert step.body == {"scoring_options": {"rules": "midog2021"}}

    moved = load_bundle(_write(tmp_path, BUNDLE.replace("path: sets/synth", "path: sets/other")))
    with pytest.raises(ValueError, match="a registered test set never changes"):
        make_plan(moved, challenges=challenges, test_sets=test_sets)


def test_an_export_plans_to_nothing_against_its_own_server(tmp_path: Path) -> None:
    path = _write(tmp_path, BUNDLE)
    steps = make_plan(load_bundle(path), challenges=[], test_sets=[])
    challenges, test_sets = _server_after(steps, path)
    for key in ("description", "requires_approval", "is_published"):
        challenges[0].setdefault(key, "" if key == "description" else False)
    exported = export_bundle(challenges[0], test_sets)
    assert exported["phases"][1]["parent_phase"] == "preliminary"
    assert exported["phases"][0]["test_set"] == "synth-set"
    again = _write(tmp_path, yaml.safe_dump(exported, sort_keys=False))
    assert make_plan(load_bundle(again), challenges=challenges, test_sets=test_sets) == []


def test_the_example_bundle_is_valid_and_plans_every_object() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "challenge-bundle" / "midog-demo.yaml"
    bundle = load_bundle(example)
    steps = make_plan(bundle, challenges=[], test_sets=[])
    assert [s.creates for s in steps] == [
        "test_set:demo-synthetic-4x3-1024x768-seed0",
        "test_set:demo-stacks-4-seed0",
        "challenge",
        "phase:preliminary",
        "phase:final",
        "phase:atypical",
    ]
    assert bundle.test_sets[0].path.endswith("var/demo/test-sets/synthetic-4x3-1024x768-seed0")


def test_log_policy_and_run_mode_are_planned_and_exported(tmp_path: Path) -> None:
    text = BUNDLE.replace("    daily_quota: 3\n", "    daily_quota: 3\n    show_logs: true\n    run_mode: invoke\n")
    path = _write(tmp_path, text)
    steps = make_plan(load_bundle(path), challenges=[], test_sets=[])
    created = next(s for s in steps if s.creates == "phase:preliminary")
    assert (created.body["show_logs"], created.body["run_mode"]) == (True, "invoke")
    challenges, test_sets = _server_after(steps, path)
    exported = export_bundle(
        {"description": "", "requires_approval": False, "is_published": True, **challenges[0]}, test_sets
    )
    assert (exported["phases"][0]["show_logs"], exported["phases"][0]["run_mode"]) == (True, "invoke")
    off = load_bundle(_write(tmp_path, text.replace("show_logs: true", "show_logs: false")))
    (step,) = make_plan(off, challenges=challenges, test_sets=test_sets)
    assert step.body == {"show_logs": False}
    with pytest.raises(BundleError, match="run_mode"):
        load_bundle(_write(tmp_path, text.replace("run_mode: invoke", "run_mode: serve")))


def test_gpu_class_and_budget_are_planned_and_exported(tmp_path: Path) -> None:
    extra = "    gpu_class: a100\n    gpu_budget_hours: 40\n    team_share: 0.25\n"
    text = BUNDLE.replace("    daily_quota: 3\n", "    daily_quota: 3\n" + extra)
    path = _write(tmp_path, text)
    steps = make_plan(load_bundle(path), challenges=[], test_sets=[])
    created = next(s for s in steps if s.creates == "phase:preliminary")
    assert (created.body["gpu_class"], created.body["gpu_budget_hours"], created.body["team_share"]) == (
        "a100",
        40,
        0.25,
    )
    challenges, test_sets = _server_after(steps, path)
    exported = export_bundle(
        {"description": "", "requires_approval": False, "is_published": True, **challenges[0]}, test_sets
    )
    phase = exported["phases"][0]
    assert (phase["gpu_class"], phase["gpu_budget_hours"], phase["team_share"]) == ("a100", 40, 0.25)
    raised = load_bundle(_write(tmp_path, text.replace("gpu_budget_hours: 40", "gpu_budget_hours: 80")))
    (step,) = make_plan(raised, challenges=challenges, test_sets=test_sets)
    assert step.body == {"gpu_budget_hours": 80}
    for bad in ("gpu_class: A100", "gpu_class: a100!"):
        with pytest.raises(BundleError, match="gpu_class"):
            load_bundle(_write(tmp_path, text.replace("gpu_class: a100", bad)))
    with pytest.raises(BundleError, match="team_share"):
        load_bundle(_write(tmp_path, text.replace("team_share: 0.25", "team_share: 2")))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [x, x]\nb: [*a, *a]\n", "challenge.yaml:2: aliases (*a) are not allowed in a bundle"),
        ("version: 1\nchallenge: {slug: d, title: " + "[" * 40 + "]" * 40 + "}\n", "nested more than 32 levels"),
        (
            "version: 1\nchallenge:\n  slug: c\n  title: C\n  is_published: false\n  is_published: true\n",
            "challenge.yaml:6: key 'is_published' is given twice (first on line 5)",
        ),
        ("version: 1\nchallenge:\n  slug: c\n  title: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
    ],
    ids=["alias", "nested-40", "key-twice", "nested-5000"],
)
def test_the_reader_refuses_aliases_depth_and_duplicate_keys(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BundleError) as caught:
        load_bundle(_write(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_server_applies_a_bundle_all_or_nothing(world: Any, tmp_path: Path) -> None:
    """POST /admin/bundles: a refused second phase rolls back the first phase and the new challenge."""
    body = {
        "version": 1,
        "challenge": {"slug": "atomic", "title": "Atomic", "is_published": True},
        "phases": [
            {"slug": "p1", "title": "P1", "test_set": world.test_set.name},
            {
                "slug": "p2",
                "title": "P2",
                "test_set": world.test_set.name,
                "opens_at": "2030-02-01T00:00:00Z",
                "closes_at": "2030-01-01T00:00:00Z",
            },
        ],
    }
    before = world.client.get("/api/v1/admin/challenges", headers=world.admin()).json()
    refused = world.client.post("/api/v1/admin/bundles", json=body, headers=world.admin())
    assert refused.status_code == 422, refused.text
    assert "create phase 'p2'" in refused.json()["detail"]
    assert world.client.get("/api/v1/admin/challenges", headers=world.admin()).json() == before
    body["phases"][1].pop("closes_at")
    dry = world.client.post("/api/v1/admin/bundles", params={"dry_run": True}, json=body, headers=world.admin())
    assert dry.json() == {"steps": ["create challenge 'atomic'", "create phase 'p1'", "create phase 'p2'"],
                          "applied": False}  # fmt: skip
    assert world.client.get("/api/v1/admin/challenges", headers=world.admin()).json() == before
    applied = world.client.post("/api/v1/admin/bundles", json=body, headers=world.admin())
    assert applied.json()["applied"] is True
    again = world.client.post("/api/v1/admin/bundles", json=body, headers=world.admin())
    assert again.json() == {"steps": [], "applied": False}
    phases = world.client.get("/api/v1/challenges/atomic", headers=world.admin()).json()["phases"]
    assert [p["slug"] for p in phases] == ["p1", "p2"]
