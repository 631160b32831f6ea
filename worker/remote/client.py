"""A GPU host's side of the job protocol (app.runner): HTTP calls to the control host's API with a runner token.

Errors say whose they are:
- `TokenRefusedError` (401/403): the runner token is unknown, expired or revoked; the host stops taking jobs.
- `worker.lease.LeaseLostError` (409 on a job call): the job was cancelled or taken over; the run stops and
  lands nothing.
- `ApiUnavailableError`: the API could not be reached, or answered 5xx, for longer than `retry_budget_s`
  (each call is retried with backoff until then): an infrastructure fault, never the participant's.
A lease renewal never retries: it says True (held), False (lost) or None (unknown: the API is away and the
lease is long enough to ride that out), as worker.lease expects.

Imports httpx, the standard library and worker.lease, worker.blob_cache; must not import app, SQLAlchemy,
Celery or torch: this module is what a GPU host has instead of a database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from worker.blob_cache import Fetch
from worker.lease import LeaseLostError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024


class TokenRefusedError(Exception):
    """The API refused the runner token (revoked, expired, unknown or of another scope)."""


class ApiUnavailableError(Exception):
    """The API could not be reached (or failed) within the retry budget."""


class RunnerClient:
    """Calls of one GPU host: `ping`, `claim`, and a `JobClient` per claimed job."""

    def __init__(self, api: str, token: str, *, timeout_s: float = 60.0, retry_budget_s: float = 60.0) -> None:
        self.api = api.rstrip("/")
        self.retry_budget_s = retry_budget_s
        self._http = httpx.Client(
            base_url=self.api + "/api/v1/runner",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, retry: bool = True, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call, retried while the API is away (up to the budget); 401/403 and 409 raise at once."""
        deadline = time.monotonic() + (self.retry_budget_s if retry else 0.0)
        delay = 0.5
        while True:
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{exc.__class__.__name__}: {exc}"
            else:
                if response.status_code in (401, 403):
                    raise TokenRefusedError(_detail(response))
                if response.status_code == 409:
                    raise LeaseLostError(_detail(response))
                if response.status_code < 500:
                    response.raise_for_status()
                    return response
                problem = f"HTTP {response.status_code}: {_detail(response)}"
            if time.monotonic() + delay > deadline:
                raise ApiUnavailableError(f"{method} {path}: {problem}")
            logger.warning("API call %s %s failed (%s); retrying in %.1fs", method, path, problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def ping(self) -> dict[str, Any]:
        return dict(self.request("GET", "/ping", retry=False).json())

    def heartbeat(self, report: dict[str, Any]) -> dict[str, Any]:
        """Report the host (app.runner.hosts); not retried: the next heartbeat comes soon."""
        return dict(self.request("POST", "/heartbeat", retry=False, json=report).json())

    def claim(self, evaluation_id: int, host: str, gpu_classes: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"host": host}
        if gpu_classes:
            body["gpu_classes"] = gpu_classes
        return dict(self.request("POST", f"/jobs/{evaluation_id}/claim", json=body).json())

    def job(self, evaluation_id: int, attempt: int, job_key: str) -> JobClient:
        return JobClient(self, evaluation_id, attempt, job_key)


class JobClient:
    """The calls of one claimed job; each carries its evaluation, attempt and job key."""

    def __init__(self, client: RunnerClient, evaluation_id: int, attempt: int, job_key: str) -> None:
        self.client = client
        self.evaluation_id = evaluation_id
        self.attempt = attempt
        self._headers = {"X-Job-Key": job_key}
        self._path = f"/jobs/{evaluation_id}/attempts/{attempt}"

    def _call(self, method: str, tail: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, self._path + tail, headers=self._headers, **kwargs)

    def renew(self, progress: float | None = None, message: str = "") -> bool | None:
        """True: still held; False: lost (or the token was refused); None: the API is away for now."""
        try:
            self.client.request(
                "POST",
                self._path + "/lease",
                retry=False,
                headers=self._headers,
                json={"progress": progress, "message": message},
            )
        except (LeaseLostError, TokenRefusedError):
            return False
        except ApiUnavailableError:
            return None
        return True

    def progress(self, fraction: float, message: str) -> None:
        """Progress for the participant; raises LeaseLostError when the job was cancelled or taken over."""
        if self.renew(fraction, message) is False:
            raise LeaseLostError(f"evaluation {self.evaluation_id} attempt {self.attempt} no longer holds its lease")

    def manifest(self) -> dict[str, Any]:
        return dict(self._call("GET", "/manifest").json())

    def fetch(self, entry: dict[str, Any]) -> Fetch:
        """A fetch function for worker.blob_cache: the entry's presigned URL when it has one, else the API."""
        url = entry.get("url")
        sha256 = str(entry["sha256"])

        def from_url() -> Iterator[bytes]:
            try:
                with httpx.stream("GET", str(url), timeout=httpx.Timeout(60.0, connect=10.0)) as response:
                    response.raise_for_status()
                    yield from response.iter_bytes(CHUNK_BYTES)
            except httpx.HTTPError as exc:
                raise ApiUnavailableError(f"presigned GET of {sha256}: {exc}") from exc

        def from_api() -> Iterator[bytes]:
            http = self.client._http
            try:
                with http.stream("GET", f"{self._path}/files/{sha256}", headers=self._headers) as response:
                    if response.status_code in (401, 403):
                        raise TokenRefusedError(f"fetch of {sha256}: HTTP {response.status_code}")
                    if response.status_code == 409:
                        raise LeaseLostError(f"fetch of {sha256}: the lease was lost")
                    response.raise_for_status()
                    yield from response.iter_bytes(CHUNK_BYTES)
            except httpx.HTTPError as exc:
                raise ApiUnavailableError(f"fetch of {sha256} through the API: {exc}") from exc

        return from_url if url else from_api

    def put_file(self, tail: str, path: Path) -> None:
        """Upload a file (outputs are bounded by the API: predictions 64 MiB, a log tail 1 MiB); sent as bytes
        so that a retried call sends them again."""
        self._call("PUT", tail, content=path.read_bytes())

    def put_bytes(self, tail: str, data: bytes) -> None:
        self._call("PUT", tail, content=data)

    def finish(self, run_seconds: float, run_info: dict[str, Any]) -> None:
        self._call("POST", "/finish", json={"run_seconds": run_seconds, "run_info": run_info})

    def fail(self, kind: str, message: str, detail: str) -> None:
        self._call("POST", "/failure", json={"kind": kind, "message": message[:500], "detail": detail[-20000:]})


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("message") or body)[:300]
    return str(body)[:300]
