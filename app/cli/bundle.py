"""`midog-eval admin apply BUNDLE` and `midog-eval admin export SLUG`: a challenge as a YAML bundle (app.bundles),
applied through the organiser API of any server (token: `midog-eval login --token`, or MIDOG_TOKEN)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

ServerOption = Annotated[str | None, typer.Option("--server", help="Server URL (default: the logged-in server).")]


def apply_command(
    bundle_file: Annotated[Path, typer.Argument(help="The challenge bundle (YAML).", metavar="BUNDLE")],
    server: ServerOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
) -> None:
    """Create or update a challenge, its test sets and phases from a YAML bundle: prints the plan (what is
    created or changed), then applies it. Applying the same bundle again changes nothing."""
    from app.bundles.plan import make_plan
    from app.bundles.source import BundleError, load_bundle
    from app.cli.client import check, client, console, run

    try:
        bundle = load_bundle(bundle_file)
    except BundleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def body() -> None:
        with client(server, timeout=120.0) as http:
            challenges = check(http.get("/admin/challenges"))
            test_sets = check(http.get("/admin/test-sets"))
            try:
                steps = make_plan(bundle, challenges=challenges, test_sets=test_sets)
            except ValueError as exc:
                typer.echo(f"error: {bundle_file}: {exc}", err=True)
                raise typer.Exit(2) from None
            if not steps:
                console.print(f"challenge {bundle.challenge.slug!r} already matches {bundle_file}: nothing to change")
                return
            console.print(f"plan for {bundle.challenge.slug!r} ({len(steps)} steps):")
            for step in steps:
                console.print(f"  {'+' if step.method == 'POST' else '~'} {step.summary}", soft_wrap=True)
            if dry_run:
                return
            ids = _known_ids(bundle.challenge.slug, challenges, test_sets)
            for step in steps:
                payload = {**step.body, **_resolved(step.refs, ids)}
                path = step.path.replace("{challenge}", str(ids.get("challenge", "")))
                response = http.request(step.method, "/admin" + path, json=payload)
                try:
                    created = check(response)
                except Exception:
                    console.print(f"[red]failed at: {step.summary}[/red]")
                    raise
                if step.creates:
                    ids[step.creates] = int(created["id"])
            console.print(f"applied {len(steps)} steps")

    run(body)


def _known_ids(slug: str, challenges: list[dict[str, Any]], test_sets: list[dict[str, Any]]) -> dict[str, int]:
    ids = {f"test_set:{t['name']}": int(t["id"]) for t in test_sets}
    for c in challenges:
        if c["slug"] == slug:
            ids["challenge"] = int(c["id"])
            ids.update({f"phase:{p['slug']}": int(p["id"]) for p in c["phases"]})
    return ids


def _resolved(refs: dict[str, str], ids: dict[str, int]) -> dict[str, int]:
    out = {}
    if "test_set" in refs:
        out["test_set_id"] = ids[f"test_set:{refs['test_set']}"]
    if "parent_phase" in refs:
        out["parent_phase_id"] = ids[f"phase:{refs['parent_phase']}"]
    return out


def export_command(
    slug: Annotated[str, typer.Argument(help="The challenge's slug.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (default: standard output).")] = None,
    server: ServerOption = None,
) -> None:
    """Write a running challenge, its phases and test sets as a bundle that `admin apply` recreates."""
    import yaml

    from app.bundles.plan import export_bundle
    from app.cli.client import ClientError, check, client, run

    def body() -> None:
        with client(server) as http:
            challenges = check(http.get("/admin/challenges"))
            test_sets = check(http.get("/admin/test-sets"))
        found = next((c for c in challenges if c["slug"] == slug), None)
        if found is None:
            raise ClientError(f"no challenge {slug!r} on this server")
        text = yaml.safe_dump(export_bundle(found, test_sets), sort_keys=False, allow_unicode=True)
        header = f"# midog-eval challenge bundle of {slug!r}; apply with: midog-eval admin apply FILE\n"
        if out is None:
            sys.stdout.write(header + text)
        else:
            out.write_text(header + text, encoding="utf-8")
            typer.echo(f"wrote {out}", err=True)

    run(body)
