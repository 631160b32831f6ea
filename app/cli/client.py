"""Participant commands of `midog-eval`: login, challenges, submit, status, leaderboard.

They talk to a server's REST API only (httpx), never to its database or queue, so they work from any
machine. The server URL and the token are kept in `<user config dir>/midog-eval/config.json` (mode 0600);
`--server` and `MIDOG_SERVER` / `MIDOG_TOKEN` override it. Must not import the service, the worker or torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any, cast

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from app.settings import ClientSettings
from worker.result_fields import ResultField, interval_ends, shown_fields

app = typer.Typer(no_args_is_help=True)
# Piped output keeps whole tables (rich would squeeze them into 80 columns).
settings = ClientSettings()  # MIDOG_SERVER, MIDOG_TOKEN, COLUMNS (environment or .env), read once
console = Console(width=None if sys.stdout.isatty() else settings.columns)
err = Console(stderr=True)

DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL = {"succeeded", "failed", "cancelled"}

ServerOption = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: the logged-in server, else MIDOG_SERVER).")
]


class ClientError(Exception):
    """An error the user can act on; printed as one line."""


# --- configuration -------------------------------------------------------------------------------------


def config_path() -> Path:
    """`midog-eval/config.json` under the user's config directory (XDG_CONFIG_HOME on Linux)."""
    return Path(typer.get_app_dir("midog-eval")) / "config.json"


def load_config() -> dict[str, str]:
    path = config_path()
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def save_config(config: dict[str, str]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The token is a credential: create the file private, then write.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)
    os.chmod(path, 0o600)
    return path


def server_url(server: str | None) -> str:
    return (server or settings.server or load_config().get("server") or DEFAULT_SERVER).rstrip("/")


def token() -> str | None:
    return settings.token or load_config().get("token")


# --- HTTP ----------------------------------------------------------------------------------------------


def client(server: str | None, *, auth: bool = True, timeout: float = 30.0) -> httpx.Client:
    headers = {"User-Agent": "midog-eval-cli"}
    tok = token() if auth else None
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    return httpx.Client(base_url=server_url(server) + "/api/v1", headers=headers, timeout=timeout)


def check(response: httpx.Response) -> Any:
    """The JSON body of a successful response; otherwise a ClientError with the server's one-line detail."""
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
        detail = f"{body.get('detail') or body.get('error')}"
        if "reset_at" in body:
            detail += f" (resets at {body['reset_at']})"
    except ValueError:
        detail = response.text[:200] or response.reason_phrase
    hint = " (run `midog-eval login`)" if response.status_code == 401 else ""
    raise ClientError(f"{response.status_code}: {detail}{hint}")


def run(action: Any) -> None:
    """Run a command body, turning client and connection errors into one line and exit status 1."""
    try:
        action()
    except ClientError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        err.print(f"[red]error:[/red] cannot reach the server: {exc}")
        raise typer.Exit(1) from None


# --- formatting ----------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def ci(low: Any, high: Any) -> str:
    return "" if low is None or high is None else f" [{fmt(low)}, {fmt(high)}]"


def classification_table(result: dict[str, Any]) -> Table:
    """A Track 2 result: balanced accuracy and ROC AUC per tumour domain (atypical figures positive), with
    sensitivity, specificity and the counts, the overall row last."""
    table = Table(title="Result per domain")
    for name in ("domain", "TP", "FP", "FN", "TN", "sensitivity", "specificity", "balanced acc.", "ROC AUC"):
        table.add_column(name, justify="left" if name == "domain" else "right")
    rows = [(label, g, False) for label, g in result.get("groups", {}).items()]
    overall = {**result, "balanced_accuracy_ci_low": None, "balanced_accuracy_ci_high": None}
    low_high = (result.get("intervals") or {}).get("balanced_accuracy") or [None, None]
    overall["balanced_accuracy_ci_low"], overall["balanced_accuracy_ci_high"] = low_high[0], low_high[-1]
    for label, g, _ in [*rows, ("[bold]all[/bold]", overall, True)]:
        table.add_row(
            label,
            str(g.get("tp", "")),
            str(g.get("fp", "")),
            str(g.get("fn", "")),
            str(g.get("tn", "")),
            fmt(g.get("sensitivity")),
            fmt(g.get("specificity")),
            fmt(g.get("balanced_accuracy")) + ci(g.get("balanced_accuracy_ci_low"), g.get("balanced_accuracy_ci_high")),
            fmt(g.get("roc_auc")),
        )
    return table


def result_table(result: dict[str, Any]) -> Table:
    """Per-scanner counts and metrics of one result, with the overall row last (per tumour domain with balanced
    accuracy and ROC AUC for a classification result)."""
    if result.get("task") == "classification":
        return classification_table(result)
    table = Table(title="Result per scanner")
    shown = shown_fields("detection")
    table.add_column("scanner", justify="left")
    for f in shown:
        table.add_column(f.label, justify="right")
    for label, g in result.get("groups", {}).items():
        table.add_row(label, *(_metric_cell(g, f) for f in shown))
    table.add_row("[bold]all[/bold]", *(_metric_cell(result, f, overall=True) for f in shown))
    return table


F1 = next(f for f in shown_fields("detection") if f.name == "f1")
BALANCED_ACCURACY = next(f for f in shown_fields("classification") if f.name == "balanced_accuracy")


def _metric_cell(values: dict[str, Any], f: ResultField, *, overall: bool = False) -> str:
    """One metric of worker.result_fields by its format, its interval beside it; the overall F1 in bold."""
    value = values.get(f.name)
    if f.format == "count":
        return str(values[f.name] if overall else values.get(f.name, ""))
    text = f"[bold]{fmt(value)}[/bold]" if overall and f.name == "f1" else fmt(value)
    ends = interval_ends(f.name)
    return text + ci(values.get(ends[0]), values.get(ends[1])) if ends else text


def print_submission(sub: dict[str, Any]) -> None:
    evaluation = sub.get("evaluation") or {}
    status = evaluation.get("status", "none")
    console.print(f"submission {sub['id']} ({sub['kind']}, {sub['original_filename']}): [bold]{status}[/bold]")
    if sub.get("model_filename"):
        reused = f", the image of submission {sub['image_submission_id']}" if sub.get("image_submission_id") else ""
        console.print(f"model tarball {sub['model_filename']}{reused}; runs in {sub.get('run_mode') or 'exec'} mode")
    if evaluation.get("error_message"):
        # A Text, not markup: the line may hold brackets of the participant's own (a file name, a module).
        console.print(Text(evaluation["error_message"], style="red"), highlight=False)
    if sub.get("logs_shown"):
        console.print(f"run logs: midog-eval logs {sub['id']}")
    if sub.get("scores_hidden"):
        console.print("scores of this phase are hidden until it closes")
    elif sub.get("result"):
        console.print(result_table(sub["result"]))


def headline(result: dict[str, Any]) -> str:
    """A result's main number: balanced accuracy for classification, F1 for detection; "–" without one."""
    if not result:
        return "–"
    if result.get("task") == "classification":
        return f"bal. acc. {fmt(result.get('balanced_accuracy'))}"
    return f"F1 {fmt(result.get('f1'))}"


def leaderboard_table(board: dict[str, Any]) -> Table:
    """Rank, team, method, the phase's headline metric (F1 for detection, balanced accuracy for Track 2) with
    its CI, the same per scanner and on the worst scanner, AP (detection only), rank robustness."""
    labels: list[str] = board["group_labels"]
    classification = board.get("task") == "classification"
    metric = BALANCED_ACCURACY if classification else F1
    title = "bal. acc." if classification else "F1"
    group_metric = board.get("group_metric", metric.name)
    table = Table(title=f"{board['challenge_slug']}/{board['phase_slug']}: {board['phase_title']}")
    columns = ("rank", "team", "method", f"{title} [95% CI]", *labels, "worst", *(() if classification else ("AP",)))
    for name in (*columns, "robust"):
        table.add_column(name, justify="left" if name in {"team", "method"} else "right")
    for e in board["entries"]:
        per_group = [e["groups"].get(label, {}).get(group_metric) for label in labels]
        present = [v for v in per_group if v is not None]
        robust = e.get("rank_robustness")
        table.add_row(
            "baseline" if e["is_baseline"] else str(e["rank"]),
            e["team_name"],
            e["method_name"],
            _metric_cell(e, metric),
            *[fmt(v) for v in per_group],
            fmt(min(present)) if present else "–",
            *(() if classification else (fmt(e.get("ap")),)),
            "–" if robust is None else f"{robust * 100:.0f}%",
        )
    return table


# --- phases --------------------------------------------------------------------------------------------


def resolve_phase(http: httpx.Client, phase: str) -> int:
    """A phase id from `42` or `challenge-slug/phase-slug`."""
    if phase.isdigit():
        return int(phase)
    slug, sep, phase_slug = phase.partition("/")
    if not sep:
        raise ClientError(f"phase {phase!r}: give its id or CHALLENGE/PHASE (see `midog-eval challenges`)")
    challenge = check(http.get(f"/challenges/{slug}"))
    for p in challenge["phases"]:
        if p["slug"] == phase_slug:
            return int(p["id"])
    raise ClientError(f"challenge {slug!r} has no phase {phase_slug!r}")


def guess_kind(path: Path) -> str:
    """predictions (.json/.csv), container (an image .tar with manifest.json or oci-layout, or a .tar.gz as
    `docker save | gzip` writes it) or model."""
    name = path.name.lower()
    if name.endswith((".json", ".csv")) or path.is_dir():
        return "predictions"
    if name.endswith((".tar.gz", ".tgz")):  # model archives are zip files; a gzipped tar is a saved image
        return "container"
    if name.endswith(".tar"):
        import tarfile

        with tarfile.open(path) as tar:
            names = set(tar.getnames()[:1000])
        if names & {"manifest.json", "oci-layout", "./manifest.json", "./oci-layout"}:
            return "container"
    return "model"


def container_choice(
    file: Path | None, *, kind: str | None, model: Path | None, image: int | None, run_mode: str | None
) -> str:
    """The submission kind of `submit`'s arguments; ClientError when they do not go together."""
    if file is None and image is None:
        raise ClientError("give the file to submit, or --image ID with --model model.tar.gz")
    if file is not None and image is not None:
        raise ClientError("give either an image file or --image ID (an image you submitted before), not both")
    if image is not None and model is None:
        raise ClientError("--image runs an earlier image with new weights: add --model model.tar.gz")
    if run_mode is not None and run_mode not in ("exec", "invoke"):
        raise ClientError("--run-mode: exec or invoke")
    chosen = kind or ("container" if file is None or model is not None or run_mode else guess_kind(file))
    if chosen != "container" and (model is not None or image is not None or run_mode):
        raise ClientError(f"--model, --image and --run-mode go with container submissions, not {chosen}")
    return chosen


# --- commands ------------------------------------------------------------------------------------------


@app.command()
def login(
    server: Annotated[
        str | None, typer.Option("--server", help=f"Server URL (else MIDOG_SERVER, else {DEFAULT_SERVER}).")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Account e-mail (prompted).")] = None,
    password: Annotated[str | None, typer.Option(help="Password (else MIDOG_PASSWORD, else prompted, hidden).")] = None,
    api_token: Annotated[
        str | None, typer.Option("--token", help="Store an API token from the organisers instead.")
    ] = None,
) -> None:
    """Log in and store the server URL and a token in the user's config directory."""

    def body() -> None:
        base = (server or settings.server or DEFAULT_SERVER).rstrip("/")
        tok = api_token
        if tok is None:
            address = email or typer.prompt("E-mail")
            secret = password or settings.password.get_secret_value() or typer.prompt("Password", hide_input=True)
            with httpx.Client(base_url=base + "/api/v1", timeout=30) as http:
                tok = check(http.post("/auth/login", json={"email": address, "password": secret}))["token"]
        with httpx.Client(base_url=base + "/api/v1", headers={"Authorization": f"Bearer {tok}"}, timeout=30) as http:
            me = check(http.get("/me"))
        path = save_config({"server": base, "token": str(tok)})
        who = (me.get("team") or {}).get("name") or me["scope"]
        console.print(f"logged in to {base} as {who}; token stored in {path}")

    run(body)


@app.command()
def challenges(server: ServerOption = None) -> None:
    """List the published challenges and their phases (id, dates, what may be submitted)."""

    def body() -> None:
        with client(server, auth=False) as http:
            items = check(http.get("/challenges"))
        table = Table(title="Challenges")
        for name in ("phase id", "challenge/phase", "title", "open", "closes (UTC)", "accepts", "leaderboard"):
            table.add_column(name)
        for c in items:
            for p in c["phases"]:
                table.add_row(
                    str(p["id"]),
                    f"{c['slug']}/{p['slug']}",
                    f"{c['title']}: {p['title']}",
                    "yes" if p["is_open"] else "no",
                    (p["closes_at"] or "–")[:16].replace("T", " "),
                    ", ".join(p["allowed_kinds"]),
                    p["leaderboard_visibility"],
                )
        console.print(table)

    run(body)


class _ProgressReader:
    """A file wrapper that advances a progress bar as httpx streams the upload."""

    def __init__(self, fh: IO[bytes], progress: Progress, task: Any) -> None:
        self._fh = fh
        self._progress = progress
        self._task = task

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self._progress.advance(self._task, len(chunk))
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(64 * 1024):
            yield chunk


def upload(
    http: httpx.Client, phase_id: int, parts: dict[str, Path], kind: str, fields: dict[str, str]
) -> dict[str, Any]:
    """Send the files (part name -> path: `file`, and `model` for a container's model tarball) and the
    fields in one multipart request, with one progress bar for all of it."""
    size = sum(path.stat().st_size for path in parts.values())
    columns = (TextColumn("uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with (
        contextlib.ExitStack() as stack,
        Progress(*columns, console=err, transient=not err.is_terminal) as progress,
    ):
        task = progress.add_task("upload", total=size)
        files: dict[str, Any] = {}
        for name, path in parts.items():
            reader = _ProgressReader(stack.enter_context(path.open("rb")), progress, task)
            files[name] = (path.name, cast(IO[bytes], reader), "application/octet-stream")
        if not files:  # a model reusing an image always has its tarball; keep the body multipart regardless
            files["description"] = (None, fields.pop("description", ""))
        response = http.post(
            f"/phases/{phase_id}/submissions",
            params={"kind": kind},
            data={k: v for k, v in fields.items() if v},
            files=files,
            timeout=httpx.Timeout(30.0, write=None, read=600.0),
        )
    result: dict[str, Any] = check(response)
    return result


def _sse_events(http: httpx.Client, submission_id: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of the submission's server-sent event stream."""
    timeout = httpx.Timeout(30.0, read=60.0)
    with http.stream("GET", f"/submissions/{submission_id}/events", timeout=timeout) as response:
        if not response.is_success:
            response.read()
            check(response)
        event, data = "message", ""
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line == "":
                if data:
                    yield event, json.loads(data)
                event, data = "message", ""


def wait_for(http: httpx.Client, submission_id: int, *, poll_s: float = 2.0) -> dict[str, Any]:
    """Show the live status (the SSE stream; polling if the stream breaks) until the evaluation ends."""
    last = ""
    with err.status("queued") as spinner:

        def show(status: str | None, progress: float, message: str) -> None:
            nonlocal last
            line = f"{status or 'waiting'} {progress * 100:3.0f}% {message}".rstrip()
            spinner.update(line)
            if line != last and not err.is_terminal:
                err.print(line)
            last = line

        try:
            for event, data in _sse_events(http, submission_id):
                if event == "status":
                    show(data.get("status"), float(data.get("progress") or 0), data.get("progress_message") or "")
                    if data.get("status") in TERMINAL:
                        break
                elif event == "end":
                    break
        except (httpx.TransportError, json.JSONDecodeError) as exc:
            err.print(f"live status stream interrupted ({exc.__class__.__name__}); polling")
        while True:
            sub: dict[str, Any] = check(http.get(f"/submissions/{submission_id}"))
            evaluation = sub.get("evaluation") or {}
            show(
                evaluation.get("status"), float(evaluation.get("progress") or 0), evaluation.get("progress_message", "")
            )
            if evaluation.get("status") in TERMINAL or not evaluation:
                return sub
            time.sleep(poll_s)


@app.command()
def submit(
    phase: Annotated[str, typer.Argument(help="Phase id, or CHALLENGE/PHASE.")],
    file: Annotated[
        Path | None,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="Predictions (JSON/CSV), a model archive (zip) or an image (.tar or .tar.gz); leave it out with "
            "--image.",
        ),
    ] = None,
    kind: Annotated[str | None, typer.Option(help="predictions, model or container (default: from the file).")] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            exists=True,
            dir_okay=False,
            help="Container submissions: weights as a model.tar.gz, extracted read-only to /opt/ml/model.",
        ),
    ] = None,
    image: Annotated[
        int | None,
        typer.Option(
            "--image",
            help="Instead of FILE: run the image of this earlier container submission of your team with --model.",
        ),
    ] = None,
    run_mode: Annotated[
        str | None,
        typer.Option("--run-mode", help="Container submissions: exec or invoke (default: the phase's)."),
    ] = None,
    method: Annotated[str, typer.Option(help="Method name shown on the leaderboard.")] = "",
    description: Annotated[str, typer.Option(help="Method description.")] = "",
    paper_url: Annotated[str, typer.Option(help="Link to a paper or preprint.")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Show live status until done, then the results.")] = False,
    server: ServerOption = None,
) -> None:
    """Upload a submission to a phase; with --wait, follow it and print the per-scanner (per-domain) results.

    A container image may come with its weights apart (--model model.tar.gz); a new model.tar.gz can also run
    with an image submitted before (--image ID --model model.tar.gz), so new weights need no new image."""

    def body() -> None:
        chosen = container_choice(file, kind=kind, model=model, image=image, run_mode=run_mode)
        with client(server) as http:
            phase_id = resolve_phase(http, phase)
            fields = {"method_name": method, "description": description, "paper_url": paper_url}
            if image is not None:
                fields["image_submission"] = str(image)
            if run_mode:
                fields["run_mode"] = run_mode
            parts = {name: path for name, path in (("file", file), ("model", model)) if path is not None}
            sub = upload(http, phase_id, parts, chosen, fields)
            sent = " with ".join(p.name for p in parts.values())
            reused = f" (the image of submission {image})" if image is not None else ""
            console.print(f"submitted {sent}{reused} as submission {sub['id']} ({chosen}) to phase {phase_id}")
            if not wait:
                console.print(f"follow it with: midog-eval status {sub['id']}")
                return
            final = wait_for(http, int(sub["id"]))
            print_submission(final)
            if (final.get("evaluation") or {}).get("status") != "succeeded":
                raise typer.Exit(1)

    run(body)


@app.command()
def status(
    submission_id: Annotated[int | None, typer.Argument(help="A submission id (default: list them).")] = None,
    phase: Annotated[str | None, typer.Option(help="Only this phase (id or CHALLENGE/PHASE).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the submission until it is done.")] = False,
    server: ServerOption = None,
) -> None:
    """Your team's submissions, or one submission with its per-scanner results."""

    def body() -> None:
        with client(server) as http:
            if submission_id is not None:
                sub = wait_for(http, submission_id) if wait else check(http.get(f"/submissions/{submission_id}"))
                print_submission(sub)
                return
            params = {"phase_id": resolve_phase(http, phase)} if phase else {}
            items = check(http.get("/submissions", params=params))
        table = Table(title="Your team's submissions")
        for name in ("id", "phase", "submitted (UTC)", "kind", "method", "status", "score"):
            table.add_column(name)
        for s in items:
            evaluation = s.get("evaluation") or {}
            result = s.get("result") or {}
            table.add_row(
                str(s["id"]),
                str(s["phase_id"]),
                s["created_at"][:16].replace("T", " "),
                s["kind"],
                s["method_name"],
                evaluation.get("status", "–"),
                "hidden" if s.get("scores_hidden") else headline(result),
            )
        console.print(table)

    run(body)


@app.command()
def logs(
    submission_id: Annotated[int, typer.Argument(help="A model or container submission of your team.")],
    case: Annotated[str | None, typer.Option(help="One case's whole log (default: the end of each).")] = None,
    server: ServerOption = None,
) -> None:
    """The run logs of a submission (each case's last 500 lines of stdout and stderr), in phases that show
    them; in a hidden test phase the failure line of `midog-eval status ID` is all there is."""

    def body() -> None:
        with client(server) as http:
            got = check(http.get(f"/submissions/{submission_id}/logs", params={"case": case} if case else {}))
        if not got["cases"]:
            console.print(f"submission {submission_id}: no log kept (the run printed nothing, or has not run yet)")
        for item in got["cases"]:
            cut = " (its end; --case for all of it)" if item["truncated"] else ""
            console.rule(f"{item['case']}{cut}")
            console.print(item["log"], markup=False, highlight=False, end="")

    run(body)


@app.command()
def leaderboard(
    phase: Annotated[str, typer.Argument(help="Phase id, or CHALLENGE/PHASE.")],
    server: ServerOption = None,
) -> None:
    """A phase's leaderboard as a table: overall F1 with its CI, F1 per scanner, AP and rank robustness."""

    def body() -> None:
        with client(server, auth=token() is not None) as http:
            board = check(http.get(f"/phases/{resolve_phase(http, phase)}/leaderboard"))
        if not board["scores_visible"]:
            console.print(f"{board['phase_title']}: scores are hidden ({board['visibility']})")
            return
        console.print(leaderboard_table(board))

    run(body)


@app.command()
def report(
    phase: Annotated[str, typer.Argument(help="Phase id, or CHALLENGE/PHASE.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the HTML file.")] = Path("report.html"),
    server: ServerOption = None,
) -> None:
    """Write a phase's results report: one self-contained HTML file (leaderboard, ranking analysis plots and
    the BIAS reporting items) that opens offline. Organisers logged in get it while scores are hidden too."""

    def body() -> None:
        with client(server, auth=token() is not None, timeout=120.0) as http:
            phase_id = resolve_phase(http, phase)
            response = http.get(f"/phases/{phase_id}/report.html")
            if not response.is_success:
                check(response)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(response.content)
        console.print(f"wrote {out} ({len(response.content) / 1024:.0f} KiB): the report of phase {phase_id}")

    run(body)


# --- accounts and teams ---------------------------------------------------------------------------------


def _secret(password: str | None) -> str:
    """The password given, else MIDOG_PASSWORD, else asked twice without echo."""
    return (
        password
        or settings.password.get_secret_value()
        or typer.prompt("Password (at least 10 characters)", hide_input=True, confirmation_prompt=True)
    )


def _store_account(base: str, result: dict[str, Any]) -> None:
    path = save_config({"server": base, "token": str(result["token"]["token"])})
    console.print(
        f"team [bold]{result['team']['name']}[/bold], member {result['participant']['email']}; "
        f"logged in to {base}, token stored in {path}"
    )
    if not result["team"].get("is_approved", True):
        console.print("the organisers approve new teams before their submissions count; you can submit meanwhile")


@app.command()
def register(
    team_name: Annotated[str, typer.Option("--team", help="Your team's name, as the leaderboard shows it.")],
    email: Annotated[str, typer.Option(help="Your e-mail (your login).")],
    server: Annotated[
        str | None, typer.Option("--server", help=f"Server URL (else MIDOG_SERVER, else {DEFAULT_SERVER}).")
    ] = None,
    password: Annotated[str | None, typer.Option(help="Password (else MIDOG_PASSWORD, else prompted).")] = None,
    display_name: Annotated[str | None, typer.Option("--name", help="Your name as your team sees it.")] = None,
) -> None:
    """Create a team with you as its first member, and log in. Others join with `midog-eval team invite`."""

    def body() -> None:
        base = (server or settings.server or DEFAULT_SERVER).rstrip("/")
        doc: dict[str, Any] = {"team_name": team_name, "email": email, "password": _secret(password)}
        if display_name:
            doc["display_name"] = display_name
        with httpx.Client(base_url=base + "/api/v1", timeout=60) as http:
            _store_account(base, check(http.post("/auth/register", json=doc)))

    run(body)


team_app = typer.Typer(no_args_is_help=True, help="Your team: its members, invitations, joining one.")
app.add_typer(team_app, name="team")


@team_app.command("show")
def team_show(server: ServerOption = None) -> None:
    """Your team's name, members and invitations."""

    def body() -> None:
        with client(server) as http:
            detail = check(http.get("/teams/me"))
        team = detail["team"]
        state = "approved" if team["is_approved"] else "awaiting approval"
        console.print(f"team [bold]{team['name']}[/bold] (id {team['id']}, {state})")
        members = Table(title="Members")
        for name in ("e-mail", "name"):
            members.add_column(name)
        for m in detail["members"]:
            members.add_row(m["email"], m["display_name"])
        console.print(members)
        if detail["invitations"]:
            invitations = Table(title="Invitations")
            for name in ("id", "e-mail", "state", "expires"):
                invitations.add_column(name)
            for i in detail["invitations"]:
                state = "joined" if i["redeemed_at"] else "revoked" if i["revoked_at"] else "open"
                invitations.add_row(str(i["id"]), i["email"], state, i["expires_at"][:16].replace("T", " "))
            console.print(invitations)

    run(body)


@team_app.command("invite")
def team_invite(
    email: Annotated[str, typer.Argument(help="The e-mail of the person you invite; only they can use it.")],
    server: ServerOption = None,
) -> None:
    """Invite someone to your team; prints the invitation (shown once) and the command they run."""

    def body() -> None:
        with client(server) as http:
            issued = check(http.post("/teams/me/invitations", json={"email": email}))
            base = str(http.base_url).removesuffix("/api/v1/").removesuffix("/api/v1")
        console.print(f"invitation for {issued['email']}, valid until {issued['expires_at'][:16].replace('T', ' ')}:")
        console.print(f"  {issued['token']}")
        console.print(
            f"they join with: midog-eval team join --server {base} --invitation {issued['token']} --email {email}",
            soft_wrap=True,
        )

    run(body)


@team_app.command("join")
def team_join(
    invitation: Annotated[str, typer.Option(help="The invitation a member gave you.")],
    email: Annotated[str, typer.Option(help="The e-mail the invitation was made for (your login).")],
    server: Annotated[
        str | None, typer.Option("--server", help=f"Server URL (else MIDOG_SERVER, else {DEFAULT_SERVER}).")
    ] = None,
    password: Annotated[str | None, typer.Option(help="Your password (else MIDOG_PASSWORD, else prompted).")] = None,
    display_name: Annotated[str | None, typer.Option("--name", help="Your name as your team sees it.")] = None,
) -> None:
    """Join a team with an invitation: your own account and password, then logged in."""

    def body() -> None:
        base = (server or settings.server or DEFAULT_SERVER).rstrip("/")
        doc: dict[str, Any] = {"invitation": invitation, "email": email, "password": _secret(password)}
        if display_name:
            doc["display_name"] = display_name
        with httpx.Client(base_url=base + "/api/v1", timeout=60) as http:
            _store_account(base, check(http.post("/auth/join", json=doc)))

    run(body)


@app.command()
def quota(
    phase: Annotated[str, typer.Argument(help="Phase id, or CHALLENGE/PHASE.")],
    server: ServerOption = None,
) -> None:
    """How many submissions your team has left in a phase, and when the daily count resets."""

    def body() -> None:
        with client(server) as http:
            q = check(http.get(f"/phases/{resolve_phase(http, phase)}/quota"))

        def left(remaining: Any, limit: Any) -> str:
            return "unlimited" if limit is None else f"{remaining} of {limit} left"

        resets = q["daily_resets_at"][:16].replace("T", " ")
        console.print(f"today: {left(q['daily_remaining'], q['daily_limit'])} (resets {resets} UTC)")
        console.print(f"whole phase: {left(q['phase_remaining'], q['phase_limit'])}")
        console.print(f"running now: {q['active_evaluations']} of at most {q['max_active']}")
        if not q["failed_count_towards_quota"]:
            console.print("failed submissions do not count")

    run(body)
