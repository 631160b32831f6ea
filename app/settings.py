"""The one place configuration is read: `Settings` for the service, the workers, beat, the sandbox runner and
the organiser CLI; `ClientSettings` for the participant client. Both read `MIDOG_<FIELD>` environment
variables and a `.env` file in the working directory, once per process (`get_settings()`), and are passed
down from there; no other module reads the environment. Child processes get theirs through
`child_environment()`, so settings reach them as `MIDOG_` variables.

Must not import FastAPI, Celery, torch or worker.tasks: the worker and the CLI read settings too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.time_limits import Limits

MiB = 1024 * 1024
GiB = 1024 * MiB
# On the server-less broker of one machine a lost wake-up is re-sent within seconds rather than minutes.
EMBEDDED_RECONCILE_INTERVAL_S = 5.0
EMBEDDED_REQUEUE_AFTER_S = 10.0
_LIMITS = Limits()


class Settings(BaseSettings):
    """Validated at start-up; every field can be set as `MIDOG_<FIELD>` (e.g. `MIDOG_DATABASE_URL`)."""

    model_config = SettingsConfigDict(env_prefix="MIDOG_", env_file=".env", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default=Path("var"), description="Root of everything the server writes.")
    database_url: str = Field(
        default="",
        # the conventional DATABASE_URL is honoured when MIDOG_DATABASE_URL is not set
        validation_alias=AliasChoices("MIDOG_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; empty: SQLite at <data_dir>/midog-eval.sqlite3 (embedded default).",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MIDOG_REDIS_URL", "REDIS_URL"),
        description="Redis URL (production broker), if any.",
    )
    redis_key_prefix: str = Field(
        default="", description="Prefix of every Redis key of the broker, so deployments can share one Redis."
    )
    broker_url: str = Field(
        default="",
        description="Celery broker; empty: redis_url, else a server-less SQLite broker under data_dir.",
    )
    storage_dir: Path | None = Field(default=None, description="Uploaded files; default <data_dir>/storage.")

    # Object storage (worker.objects; docs/deployment.md): `local` keeps objects in object_store_dir (default
    # <data_dir>/objects), the embedded default; `s3` uses an S3-compatible server (pip install -e ".[s3]").
    object_store: Literal["local", "s3"] = "local"
    object_store_dir: Path | None = None
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_region: str = "us-east-1"
    s3_prefix: str = Field(default="", description="Key prefix, so deployments can share a bucket.")
    # Presigned GET URLs handed out for one fetch live this long (S3 only).
    presigned_url_ttl_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)

    # Host names the server answers to (others get 400); pages never build links from the Host header anyway.
    trusted_hosts: list[str] = Field(default=["*"])
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated addresses or
    # networks, e.g. "10.0.0.5" or "172.18.0.0/16"); empty: none, every client is its own TCP peer, and a
    # forwarded header cannot dodge the throttling by address.
    trusted_proxies: str = ""

    # Request bodies, refused (413) before authentication and before they are read: login and registration
    # (anyone can reach them), and every other JSON body. File uploads have the limits below.
    max_auth_body_bytes: int = Field(default=16 * 1024, gt=0)
    max_json_body_bytes: int = Field(default=1 * MiB, gt=0)

    # Uploads: enforced while streaming (413), before anything is parsed.
    max_predictions_bytes: int = Field(default=64 * MiB, gt=0)
    max_model_bytes: int = Field(default=2048 * MiB, gt=0)
    max_container_bytes: int = Field(default=20480 * MiB, gt=0)
    max_model_tarball_bytes: int = Field(
        default=10240 * MiB, gt=0, description="A container submission's model.tar.gz (weights for /opt/ml/model)."
    )
    max_model_tarball_files: int = Field(default=10_000, gt=0, description="Files in one model tarball.")
    max_test_set_bytes: int = Field(default=32768 * MiB, gt=0, description="Organiser test-set archive uploads.")
    upload_chunk_bytes: int = Field(default=1 * MiB, gt=0)
    max_points_per_case: int = Field(default=100_000, gt=0)
    max_total_points: int = Field(default=2_000_000, gt=0)

    # Checks of uploaded files (app.submissions.checker): predictions files up to `inline_check_bytes` are
    # checked in the API; larger ones and archives in at most `check_processes` child processes at once, each
    # with `check_memory_bytes` of address space and `check_cpu_seconds` of CPU.
    inline_check_bytes: int = Field(default=1 * MiB, ge=0)
    check_processes: int = Field(default=2, gt=0)
    check_memory_bytes: int = Field(default=2048 * MiB, gt=64 * MiB)
    check_cpu_seconds: int = Field(default=60, gt=0)

    # Tokens issued by /auth/login, and organiser tokens (CLI and admin API) unless given another expiry.
    login_token_ttl_hours: int = Field(default=24 * 30, gt=0)
    organiser_token_ttl_days: int = Field(default=30, gt=0)
    # No token, however minted (API, CLI), expires later than this after its creation.
    token_max_lifetime_days: int = Field(default=365, gt=0)
    # Runner tokens (a GPU host's, `midog-eval admin create-runner-token`): long-lived, revoked when a host goes.
    runner_token_ttl_days: int = Field(default=365, gt=0)

    # Throttling of login and registration (moving windows, `limits` notation: "20/minute", "10/15minutes"),
    # counted in memory, or in the store `throttle_storage_url` names (e.g. the Redis URL) when several API
    # processes must share the counts. At most `max_concurrent_password_hashes` argon2 hashes (64 MiB each) run
    # at once.
    throttle_storage_url: str = ""
    login_rate_per_address: str = "20/minute"
    # Failed logins per (account, address) are refused (429) past `login_failures_per_account_address`; failures
    # for an account from all addresses together only slow its logins down (`login_slowdown_s` each), so
    # somebody else's guessing never locks the owner out.
    login_failures_per_account: str = "10/15minutes"
    login_failures_per_account_address: str = "10/15minutes"
    login_slowdown_s: float = Field(default=1.0, ge=0, le=10)
    registration_rate_per_address: str = "30/hour"
    max_concurrent_password_hashes: int = Field(default=2, gt=0)

    # Server-sent events: how often the stream polls the database and how long one stream lives.
    sse_poll_interval_s: float = Field(default=1.0, gt=0)
    sse_max_duration_s: float = Field(default=3600.0, gt=0)
    # A stream ends within this long of its token being revoked or expiring.
    sse_token_recheck_s: float = Field(default=30.0, gt=0)

    # Ranking robustness (bootstrap over cases, shared across entries).
    robustness_resamples: int = Field(default=1000, ge=10)
    robustness_seed: int = 0
    # the ranking analysis (app.leaderboard.analysis) ranks at most this many of a board's best entries
    analysis_max_entries: int = Field(default=50, ge=2, le=500)

    # Workers report themselves every `worker_heartbeat_s`; one not heard of for `worker_stale_after_s` is down.
    worker_heartbeat_s: float = Field(default=10.0, gt=0)
    worker_stale_after_s: float = Field(default=45.0, gt=0)

    # The sweeper (a periodic task of the beat) removes interrupted uploads (`.part`), half-unpacked test-set
    # uploads (`.incoming-*`) and work directories of finished evaluations older than this.
    sweep_after_s: float = Field(default=6 * 3600.0, gt=0)
    sweep_interval_s: float = Field(default=600.0, gt=0)

    # Worker time limits in seconds. They must nest (the worker refuses to start otherwise): sandbox timeout <
    # Celery soft limit < hard limit < broker visibility timeout < stale-lease expiry.
    # The defaults are those of worker.time_limits.Limits (one source for the settings and the worker).
    sandbox_timeout_s: float = _LIMITS.sandbox_timeout_s
    soft_time_limit_s: float = _LIMITS.soft_time_limit_s
    time_limit_s: float = _LIMITS.time_limit_s
    visibility_timeout_s: float = _LIMITS.visibility_timeout_s
    lease_expiry_s: float = _LIMITS.lease_expiry_s
    # A job that crashed its worker this many times ends `failed` (a poison job must not loop forever).
    max_attempts: int = _LIMITS.max_attempts
    # A run renews its lease this often while participant code runs; a cancel stops it within about as long.
    lease_heartbeat_s: float = _LIMITS.lease_heartbeat_s
    # The reconciler: how often it runs, and how long a queued row may wait with no message seen for it
    # (defaults: those of Limits, 60 s and 120 s; 5 s and 10 s on the server-less broker).
    reconcile_interval_s: float | None = None
    requeue_after_s: float | None = None
    # The health check of docker-compose.yml (docker/healthcheck.py api).
    healthcheck_url: str = "http://127.0.0.1:8000/api/v1/health"

    # Which runner executes each kind of submission (`package.module:Class`); empty: the sandboxed default.
    runner_model: str = ""
    runner_container: str = ""

    # Sandboxes (docs/sandbox.md). Model archives use model_sandbox_backend, else sandbox_backend, else bwrap;
    # containers use sandbox_backend, else podman.
    sandbox_backend: Literal["", "bwrap", "podman", "docker"] = ""
    model_sandbox_backend: Literal["", "bwrap", "podman", "docker"] = ""
    sandbox_runtime_dir: Path | None = None
    # `worker path=host path` pairs, comma-separated: where a worker in a container finds its paths on the host
    sandbox_host_paths: str = ""
    # The uid and gid of participant code: never the worker's own (the runner service refuses it).
    sandbox_uid: int = Field(default=10001, gt=0)
    # An unprivileged gpu worker hands its runs to the sandbox runner service listening here.
    sandbox_runner_socket: str = ""
    # Isolation controls a deployment explicitly runs without (memory, pids, seccomp; comma-separated).
    sandbox_allow_missing_controls: str = ""
    # A gpu worker reaps sandbox runs left by a dead predecessor when it starts.
    sandbox_reap_on_start: bool = True
    decoded_cache_dir: Path | None = None
    # Model archives: the image holding the worker's Python stack (podman/docker backends), its interpreter,
    # and the limits of one run (the phase's memory limit takes precedence).
    model_image: str = ""
    model_python: str = "python"
    model_memory_bytes: int = Field(default=16 * GiB, gt=0)
    model_cpus: float = Field(default=4.0, gt=0)
    model_pids: int = Field(default=512, gt=0)
    model_gpu: str = Field(default="auto", pattern=r"^(auto|none|[0-9]+)$")
    # Containers: input layout, seconds per case, and the limits of one run (the phase's memory limit first).
    container_layout: Literal["2022", "2021"] = "2022"
    container_case_seconds: float = Field(default=600.0, gt=0)
    container_memory_bytes: int = Field(default=16 * GiB, gt=0)
    container_cpus: float = Field(default=4.0, gt=0)
    container_gpu: str = Field(default="auto", pattern=r"^(auto|none|[0-9]+)$")

    # Short database timeouts so that a dead database answers 503 quickly instead of hanging requests.
    db_connect_timeout_s: int = Field(default=5, gt=0)
    db_pool_size: int = Field(default=5, gt=0)
    db_max_connections: int = Field(
        default=48, gt=0, description="Pool ceiling per process; keep it above the API's 40 worker threads."
    )
    sql_echo: bool = False

    @field_validator("database_url")
    @classmethod
    def _psycopg3(cls, url: str) -> str:
        # SQLAlchemy's bare postgresql:// means psycopg2; this project ships psycopg 3.
        for bare in ("postgresql://", "postgres://"):
            if url.startswith(bare):
                return "postgresql+psycopg://" + url.removeprefix(bare)
        return url

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        if self.worker_stale_after_s <= self.worker_heartbeat_s:
            raise ValueError(
                f"worker_stale_after_s ({self.worker_stale_after_s:g}) must exceed worker_heartbeat_s "
                f"({self.worker_heartbeat_s:g}), or every worker would look down between two heartbeats"
            )
        longest_h = self.token_max_lifetime_days * 24
        defaults_h = (self.organiser_token_ttl_days * 24, self.runner_token_ttl_days * 24, self.login_token_ttl_hours)
        if max(defaults_h) > longest_h:
            raise ValueError(
                f"organiser_token_ttl_days ({self.organiser_token_ttl_days}), runner_token_ttl_days "
                f"({self.runner_token_ttl_days}) and login_token_ttl_hours "
                f"({self.login_token_ttl_hours}) must not exceed token_max_lifetime_days "
                f"({self.token_max_lifetime_days})"
            )
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'midog-eval.sqlite3').resolve()}"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "storage"
        if self.object_store_dir is None:
            self.object_store_dir = self.data_dir / "objects"
        if self.object_store == "s3":
            unset = [f"MIDOG_{n.upper()}" for n in ("s3_endpoint_url", "s3_bucket") if not getattr(self, n)]
            if unset:
                raise ValueError(f"object_store is s3: set {' and '.join(unset)} (or use object_store=local)")
        if not self.broker_url:
            self.broker_url = self.redis_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite3').resolve()}"
        embedded = self.broker_url.startswith("sqla+")
        if self.reconcile_interval_s is None:
            self.reconcile_interval_s = EMBEDDED_RECONCILE_INTERVAL_S if embedded else _LIMITS.reconcile_interval_s
        if self.requeue_after_s is None:
            self.requeue_after_s = EMBEDDED_REQUEUE_AFTER_S if embedded else _LIMITS.requeue_after_s
        return self

    @property
    def storage_path(self) -> Path:
        """The storage directory (always set after validation)."""
        assert self.storage_dir is not None
        return self.storage_dir

    def max_upload_bytes(self, kind: str) -> int:
        """The size limit of one upload of the given submission kind."""
        return {
            "predictions": self.max_predictions_bytes,
            "model": self.max_model_bytes,
            "container": self.max_container_bytes,
        }[kind]


class ClientSettings(BaseSettings):
    """The participant client's settings: `MIDOG_SERVER` and `MIDOG_TOKEN` override its config file."""

    model_config = SettingsConfigDict(env_prefix="MIDOG_", env_file=".env", extra="ignore", populate_by_name=True)

    server: str = ""
    token: str = ""
    password: SecretStr = SecretStr("")  # `midog-eval login` without a prompt (scripts)
    # The width of tables written to a pipe or a file (a terminal gives its own).
    columns: int = Field(default=160, gt=20, validation_alias=AliasChoices("COLUMNS", "MIDOG_COLUMNS"))


_chosen: Settings | None = None


def use_settings(settings: Settings) -> None:
    """Make `settings` this process's settings (a command that builds them from its own options: the demo)."""
    global _chosen
    _chosen = settings
    get_settings.cache_clear()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; tests call `get_settings.cache_clear()` after changing the environment."""
    return _chosen if _chosen is not None else Settings()


def child_environment(
    *, keep: Iterable[str] | None = None, drop: Iterable[str] = (), **overrides: str
) -> dict[str, str]:
    """The environment of a child process: this process's (only the names in `keep`, when given) without the
    names in `drop`, plus `overrides`. Settings reach child processes this way, as MIDOG_ variables."""
    environment = dict(os.environ) if keep is None else {n: os.environ[n] for n in keep if n in os.environ}
    for name in drop:
        environment.pop(name, None)
    return {**environment, **overrides}


def set_in_environment(names: Iterable[str]) -> list[str]:
    """Which of `names` the process environment sets (non-empty): a GPU host refuses to start holding a
    database URL or a storage key (app.cli.gpu_host)."""
    return [name for name in names if os.environ.get(name)]


def use_temporary_directory(directory: Path) -> None:
    """Temporary files of this process, its forked children (tempfile) and the programs they start (TMPDIR,
    e.g. the container engine) go under `directory` (app.cli.gpu_host: the cache's disk, which its sandbox
    runner service allows, rather than the system's /tmp)."""
    import tempfile

    directory.mkdir(exist_ok=True, mode=0o700)
    os.environ["TMPDIR"] = str(directory)
    tempfile.tempdir = str(directory)
