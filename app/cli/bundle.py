"""`midog-eval admin apply BUNDLE` and `midog-eval admin export SLUG`: a challenge as a YAML bundle (app.bundles),
applied through the organiser API of any server (token: `midog-eval login --token`, or MIDOG_TOKEN)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

ServerOption = Annotated[str | None, typer.Option("--server", help="Server URL (default: the logged-in server).")]


def apply_command(
    bundle_file: Annotated[Path, typer.Argument(help="The challenge bundle (YAML).", metavar="BUNDLE")],
    server: ServerOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; change nothing.")] = False,
) -> None:
    """Create or update a challenge, its test sets and phases from a YAML bundle, all or nothing: the server
    applies the whole plan in one transaction, or nothing of it when any step is refused. Prints the plan
    (what is created or changed). Applying the same bundle again changes nothing."""
    from app.bundles.source import BundleError, load_bundle
    from app.cli.client import ClientError, check, client, console, run

    try:
        bundle = load_bundle(bundle_file)
    except BundleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def body() -> None:
        with client(server, timeout=300.0) as http:
            # Only the stated fields travel: a field the bundle leaves out keeps its value on the server.
            sent = bundle.model_dump(mode="json", exclude_unset=True)
            response = http.post("/admin/bundles", params={"dry_run": dry_run}, json=sent)
            try:
                done = check(response)
            except ClientError as exc:
                typer.echo(f"error: {bundle_file}: {exc} (nothing was changed)", err=True)
                raise typer.Exit(2 if response.status_code in (404, 409, 422) else 1) from None
        steps = done["steps"]
        if not steps:
            console.print(f"challenge {bundle.challenge.slug!r} already matches {bundle_file}: nothing to change")
            return
        console.print(f"plan for {bundle.challenge.slug!r} ({len(steps)} steps):")
        for step in steps:
            mark = "+" if step.startswith(("create", "register")) else "~"
            console.print(f"  {mark} {step}", soft_wrap=True)
        done_line = f"applied {len(steps)} steps" if done["applied"] else "dry run: every step validated, none applied"
        console.print(done_line)

    run(body)


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
