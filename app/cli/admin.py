"""`midog-eval admin ...`: organiser bootstrap on the server. `create-token` prints a new organiser token
once (stdout, nothing else there) and stores only its sha256; `create-runner-token NAME` does the same for a
GPU host's runner token (the job protocol only), recorded in the audit log like the admin API's tokens.

Imports nothing heavy at module level (the CLI must start without SQLAlchemy, FastAPI or Celery).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

admin_app = typer.Typer(
    name="admin", help="Organiser tools: tokens on the server, challenge bundles.", no_args_is_help=True
)


def _refuse_beyond_max_lifetime(expires_days: int | None, max_days: int) -> None:
    """Exit 2 when --expires-days asks for more than the server's maximum token lifetime."""
    if expires_days is not None and expires_days > max_days:
        typer.echo(
            f"error: --expires-days {expires_days} exceeds the maximum token lifetime of "
            f"{max_days} days (MIDOG_TOKEN_MAX_LIFETIME_DAYS)",
            err=True,
        )
        raise typer.Exit(2)


@admin_app.command("create-token")
def create_token_command(
    name: Annotated[str, typer.Option(help="A label to recognise the token by.")] = "admin",
    expires_days: Annotated[
        int | None,
        typer.Option(min=1, help="Expire after this many days (default: MIDOG_ORGANISER_TOKEN_TTL_DAYS, 30)."),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Scope organiser_read: may read the organiser API, change nothing.")
    ] = False,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (default: MIDOG_DATABASE_URL / settings).")
    ] = None,
) -> None:
    """Create an organiser API token and print it once; only its hash is stored."""
    from app.auth.service import create_token
    from app.db import make_engine, make_session_factory, session_scope
    from app.settings import get_settings
    from app.tables import AuditEvent, TokenScope, utcnow

    settings = get_settings()
    _refuse_beyond_max_lifetime(expires_days, settings.token_max_lifetime_days)
    engine = make_engine(database_url or settings.database_url)
    try:
        with session_scope(make_session_factory(engine, write=True)) as session:
            expires = utcnow() + timedelta(days=expires_days or settings.organiser_token_ttl_days)
            scope = TokenScope.ORGANISER_READ if read_only else TokenScope.ORGANISER
            issued = create_token(session, scope=scope, name=name, expires_at=expires)
            token_id = issued.row.id
            # A token minted on the server's machine is audited as one minted through the API is.
            session.add(
                AuditEvent(
                    token_id=None,
                    actor="command line (midog-eval admin create-token)",
                    action="create_api_token",
                    target=f"token {token_id}",
                    target_id=token_id,
                    details={"name": name, "scope": scope.value, "expires_at": expires.isoformat()},
                )
            )
    except Exception as exc:  # a missing table or a dead server: one line, exit 1
        typer.echo(f"error: could not create the token: {exc.__class__.__name__}: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(issued.token)
    typer.echo(
        f"organiser token {token_id} ({name!r}, {scope.value}) created, expires {expires:%Y-%m-%d %H:%M} UTC; "
        "it is shown only this once.",
        err=True,
    )


@admin_app.command("create-runner-token")
def create_runner_token_command(
    name: Annotated[str, typer.Argument(help="The GPU host's name, e.g. gpu-a100-1 (shown in leases and logs).")],
    expires_days: Annotated[
        int | None,
        typer.Option(min=1, help="Expire after this many days (default: MIDOG_RUNNER_TOKEN_TTL_DAYS, 365)."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (default: MIDOG_DATABASE_URL / settings).")
    ] = None,
) -> None:
    """Create a runner token for one GPU host and print it once (give it to `midog-eval gpu-host --token-file`)."""
    from app.auth.service import create_token
    from app.db import make_engine, make_session_factory, session_scope
    from app.settings import get_settings
    from app.tables import AuditEvent, TokenScope, utcnow

    label = name.strip()
    if not label or len(label) > 100:
        typer.echo("error: NAME: give the GPU host's name, 1 to 100 characters", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    _refuse_beyond_max_lifetime(expires_days, settings.token_max_lifetime_days)
    engine = make_engine(database_url or settings.database_url)
    try:
        with session_scope(make_session_factory(engine, write=True)) as session:
            expires = utcnow() + timedelta(days=expires_days or settings.runner_token_ttl_days)
            issued = create_token(session, scope=TokenScope.RUNNER, name=label, expires_at=expires)
            token_id = issued.row.id
            session.add(
                AuditEvent(
                    token_id=None,
                    actor="midog-eval admin (server command line)",
                    action="create_runner_token",
                    target=f"token {token_id}",
                    target_id=token_id,
                    details={"name": label, "scope": TokenScope.RUNNER.value, "expires_at": expires.isoformat()},
                )
            )
    except Exception as exc:  # a missing table or a dead server: one line, exit 1
        typer.echo(f"error: could not create the token: {exc.__class__.__name__}: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(issued.token)
    typer.echo(
        f"runner token {token_id} ({label!r}) created, expires {expires:%Y-%m-%d %H:%M} UTC; it is shown only this "
        f"once. Revoke it with: midog-eval admin revoke-token {token_id}",
        err=True,
    )


@admin_app.command("revoke-token")
def revoke_token_command(
    token_id: Annotated[int, typer.Argument(help="The token's id (see the admin API's /tokens).")],
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: settings).")] = None,
) -> None:
    """Revoke an API token by id."""
    from app.auth.service import revoke_token
    from app.db import make_engine, make_session_factory, session_scope
    from app.settings import get_settings
    from app.tables import ApiToken, AuditEvent

    engine = make_engine(database_url or get_settings().database_url)
    try:
        with session_scope(make_session_factory(engine, write=True)) as session:
            token = session.get(ApiToken, token_id)
            if token is None:
                typer.echo(f"error: no token {token_id}", err=True)
                raise typer.Exit(1)
            revoke_token(session, token=token)
            session.add(
                AuditEvent(
                    token_id=None,
                    actor="midog-eval admin (server command line)",
                    action="revoke_token",
                    target=f"token {token_id}",
                    target_id=token_id,
                    details={"name": token.name, "scope": token.scope.value},
                )
            )
    finally:
        engine.dispose()
    typer.echo(f"token {token_id} revoked", err=True)


@admin_app.command("refresh-standings")
def refresh_standings_command(
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: settings).")] = None,
) -> None:
    """Rebuild every phase's leaderboard (after a migration or a manual database edit)."""
    from sqlalchemy import select

    from app.db import make_engine, make_session_factory, session_scope
    from app.leaderboard.standings import refresh_standings
    from app.settings import get_settings
    from app.tables import Phase

    engine = make_engine(database_url or get_settings().database_url)
    try:
        with session_scope(make_session_factory(engine, write=True)) as session:
            for phase_id in session.scalars(select(Phase.id).order_by(Phase.id)).all():
                entries = refresh_standings(session, phase_id=phase_id)
                typer.echo(f"phase {phase_id}: {entries} entries", err=True)
    finally:
        engine.dispose()


def _add_bundle_commands() -> None:
    from app.cli.bundle import apply_command, export_command

    admin_app.command("apply")(apply_command)
    admin_app.command("export")(export_command)


_add_bundle_commands()
