"""One pydantic-settings `Settings` for the service, the worker and the CLI (env prefix `MIDOG_`).

Must not import FastAPI, Celery, torch or worker.tasks: the worker and the CLI read settings too.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Validated at start-up; every field can be set as `MIDOG_<FIELD>` (e.g. `MIDOG_DATABASE_URL`)."""

    model_config = SettingsConfigDict(env_prefix="MIDOG_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Root of everything the server writes.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty: SQLite at <data_dir>/midog-eval.sqlite3 (embedded default).",
    )
    redis_url: str | None = Field(default=None, description="Redis URL (production broker), if any.")
    redis_key_prefix: str = Field(
        default="", description="Prefix of every Redis key of the broker, so deployments can share one Redis."
    )
    broker_url: str = Field(
        default="",
        description="Celery broker; empty: redis_url, else a server-less SQLite broker under data_dir.",
    )
    storage_dir: Path | None = Field(default=None, description="Uploaded files; default <data_dir>/storage.")

    # Host names the server answers to (others get 400); pages never build links from the Host header anyway.
    trusted_hosts: list[str] = Field(default=["*"])

    # Request bodies, refused (413) before authentication and before they are read: login and registration
    # (anyone can reach them), and every other JSON body. File uploads have the limits below.
    max_auth_body_bytes: int = Field(default=16 * 1024, gt=0)
    max_json_body_bytes: int = Field(default=1 * MiB, gt=0)

    # Uploads: enforced while streaming (413), before anything is parsed.
    max_predictions_bytes: int = Field(default=64 * MiB, gt=0)
    max_model_bytes: int = Field(default=2048 * MiB, gt=0)
    max_container_bytes: int = Field(default=20480 * MiB, gt=0)
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

    # Throttling of login and registration (moving windows, `limits` notation: "20/minute", "10/15minutes"),
    # counted in memory, or in the store `throttle_storage_url` names (e.g. the Redis URL) when several API
    # processes must share the counts. At most `max_concurrent_password_hashes` argon2 hashes (64 MiB each) run
    # at once.
    throttle_storage_url: str = ""
    login_rate_per_address: str = "20/minute"
    login_failures_per_account: str = "10/15minutes"
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

    # Workers report themselves every `worker_heartbeat_s`; one not heard of for `worker_stale_after_s` is down.
    worker_heartbeat_s: float = Field(default=10.0, gt=0)
    worker_stale_after_s: float = Field(default=45.0, gt=0)

    # The sweeper (a periodic task of the beat) removes interrupted uploads (`.part`), half-unpacked test-set
    # uploads (`.incoming-*`) and work directories of finished evaluations older than this.
    sweep_after_s: float = Field(default=6 * 3600.0, gt=0)
    sweep_interval_s: float = Field(default=600.0, gt=0)

    # Short database timeouts so that a dead database answers 503 quickly instead of hanging requests.
    db_connect_timeout_s: int = Field(default=5, gt=0)
    db_pool_size: int = Field(default=5, gt=0)
    db_max_connections: int = Field(
        default=48, gt=0, description="Pool ceiling per process; keep it above the API's 40 worker threads."
    )
    sql_echo: bool = False

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        if self.worker_stale_after_s <= self.worker_heartbeat_s:
            raise ValueError(
                f"worker_stale_after_s ({self.worker_stale_after_s:g}) must exceed worker_heartbeat_s "
                f"({self.worker_heartbeat_s:g}), or every worker would look down between two heartbeats"
            )
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'midog-eval.sqlite3').resolve()}"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "storage"
        if not self.broker_url:
            self.broker_url = self.redis_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite3').resolve()}"
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing the environment."""
    return Settings()
