"""`midog-eval demo`: a synthetic 4-scanner challenge with ranked teams and baselines, served on this machine.

Two phases: detection of mitotic figures (the preliminary phase) and MIDOG 2025 Track 2, atypical versus normal
figures on synthetic stacks of patches (app.cli.demo_track2 holds its set and baselines).

The detection set's scanners are graded (worker.datasets.synth.graded_profiles): scanner-A is the one the
reference detectors were trained on and the phase declares seen; B, C and D drift further from it, D the
furthest, so methods lose F1 step by step instead of falling off a cliff.

Steps: generate a small synthetic multi-scanner test set (worker.datasets.synth), migrate the embedded
database and create the challenge, its phase and one team per baseline directly in it (the organiser's
side), start `midog-eval serve` (API + workers on SQLite and the server-less broker), then submit every
baseline through the REST API like a participant would, mark it a baseline, wait for the scores and print
the leaderboard URL. Seven simulated teams (app.cli.demo_teams) submit predictions files the same way and are
ranked, so that the ranking analysis has something to say. It keeps serving until Ctrl-C
(`--exit-after-ready` stops once the board is up).

Baselines: a dark-blob detector in numpy (colour deconvolution + difference of Gaussians, fixed threshold)
whose predictions file is always submitted, and the reference detectors of worker.reference when their
model archives are present: uploaded as model archives that a gpu-queue worker runs in the bubblewrap
sandbox, or, with --no-sandbox or without bwrap, run by the inference runtime in a child process and
submitted as predictions files.

Heavy imports happen inside functions: `midog-eval --help` must not load SQLAlchemy, numpy or torch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from app.cli.stains import RUIFROK_HE

app = typer.Typer()

CHALLENGE_SLUG = "midog-demo"
PHASE_SLUG = "preliminary"
TRACK2_SLUG = "atypical"
# Where bench/train_reference.py writes the reference detectors' archives (one directory each).
REFERENCE_ARCHIVES = Path(__file__).resolve().parents[2] / "worker" / "reference" / "archives"
# How far the last demo scanner drifts from scanner-A towards the most shifted preset (see graded_profiles).
GRADED_REACH = 0.6
SEEN_SCANNERS = ["scanner-A"]
BLOB_THRESHOLD = 0.5
_CLI_ENTRY = "from app.cli import main; main()"


@dataclass
class Baseline:
    team: str
    method: str
    description: str
    # a predictions file, or a zipped model archive (kind "model") that the gpu worker runs in the sandbox
    path: Path
    kind: str = "predictions"
    phase: str = PHASE_SLUG  # the slug of the phase it is submitted to
    is_baseline: bool = True  # False: a (simulated) team's ranked entry


@dataclass
class DemoSetup:
    phase_id: int  # the detection phase
    organiser_token: str
    # team name -> participant token
    team_tokens: dict[str, str] = field(default_factory=dict)
    created: bool = True
    phase_ids: dict[str, int] = field(default_factory=dict)  # every phase: slug -> id


def say(message: str) -> None:
    typer.echo(message, err=True)


# --- the test set and the baselines' predictions -------------------------------------------------------


def build_test_set(root: Path, *, scanners: int, cases: int, size: tuple[int, int], seed: int) -> Path:
    """The synthetic set on graded scanners scanner-A, scanner-B, ... (reused when it already exists)."""
    if (root / "manifest.json").is_file():
        return root
    from worker.datasets.synth import generate_test_set, graded_profiles

    profiles = graded_profiles(scanners, GRADED_REACH)
    generate_test_set(root, scanners=profiles, cases_per_scanner=cases, size=size, seed=seed, preview=True)
    return root


def blob_detections(
    rgb: Any, spacing_mm: float, *, threshold: float = BLOB_THRESHOLD
) -> list[tuple[float, float, float]]:
    """(x_mm, y_mm, score) of dark haematoxylin blobs a few micrometres across: optical density, Ruifrok-Johnston
    colour deconvolution with fixed stain vectors, 4x average pooling, difference of Gaussians (1 and 2.5 µm),
    local maxima 8 µm apart above `threshold`. The fixed stain vectors make it sensitive to the scanner."""
    import numpy as np
    from scipy import ndimage

    stains = np.asarray(RUIFROK_HE, dtype=np.float64)
    unmix = np.linalg.inv(stains / np.linalg.norm(stains, axis=1, keepdims=True)).astype(np.float32)
    od = -np.log10((np.asarray(rgb, dtype=np.float32)[..., :3] + 1.0) / 256.0)
    haem = (od @ unmix)[..., 0]
    s = 4
    h, w = haem.shape[0] // s * s, haem.shape[1] // s * s
    pooled = haem[:h, :w].reshape(h // s, s, w // s, s).mean(axis=(1, 3))
    um = spacing_mm * 1000.0 * s  # micrometres per pooled pixel
    response = ndimage.gaussian_filter(pooled, 1.0 / um) - ndimage.gaussian_filter(pooled, 2.5 / um)
    size = round(8.0 / um) | 1
    peaks = (response == ndimage.maximum_filter(response, size=size)) & (response > threshold)
    ys, xs = np.nonzero(peaks)
    return [
        ((x * s + s / 2) * spacing_mm, (y * s + s / 2) * spacing_mm, float(response[y, x]))
        for y, x in zip(ys, xs, strict=True)
    ]


def write_blob_predictions(test_set: Path, out: Path) -> Path:
    """The numpy blob detector over every image of the set, as an official "Multiple points" JSON."""
    import tifffile

    from worker.datasets.manifest import TestSet

    disk = TestSet.open(test_set)
    doc: dict[str, Any] = {}
    for case in disk.cases:
        assert case.spacing_mm is not None
        found = blob_detections(tifffile.imread(disk.image_path(case)), case.spacing_mm)
        doc[case.name] = {
            "type": "Multiple points",
            "points": [{"point": [x, y, 0], "probability": min(1.0, score)} for x, y, score in found],
            "version": {"major": 1, "minor": 0},
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc))
    return out


def reference_archives(directory: Path = REFERENCE_ARCHIVES) -> list[Path]:
    """Model archives of the reference detectors (directories holding manifest.json), if they were built."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if (p / "manifest.json").is_file())


def zip_archive(archive: Path, out: Path) -> Path:
    """A model-archive directory (manifest.json, model file) as the zip a participant would upload."""
    import zipfile

    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for member in sorted(archive.iterdir()):
            if member.is_file():
                z.write(member, member.name)
    return out


def sandbox_ready() -> bool:
    """Whether model archives can run here: bubblewrap (the default sandbox backend) is installed."""
    return shutil.which("bwrap") is not None


_RUN_ARCHIVE = """
import sys
from pathlib import Path
import torch
from worker.inference.detector import Detector
from worker.inference.images import list_images
from worker.inference.pipeline import run_archive
archive, test_set, out = map(Path, sys.argv[1:4])
run_archive(Detector(archive, device=torch.device("cpu")), list_images(test_set), out)
"""


def archive_predictions(archive: Path, test_set: Path, out_dir: Path) -> Path:
    """Run a trusted reference archive with the inference runtime in a child process (torch stays out of
    this one); returns the directory of `<stem>.json` files it writes."""
    from app.settings import child_environment

    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", _RUN_ARCHIVE, str(archive), str(test_set), str(out_dir)],
        check=True,
        env={"OMP_NUM_THREADS": "2", **child_environment()},
    )
    manifest = json.loads((test_set / "manifest.json").read_text())
    names = {Path(case["name"]).stem: case["name"] for case in manifest["cases"]}
    merged = {names[p.stem]: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json")) if p.stem in names}
    target = out_dir.with_suffix(".json")
    target.write_text(json.dumps(merged))
    return target


# --- the organiser's side: database rows ---------------------------------------------------------------


def setup_challenge(
    database_url: str, test_set: Path, teams: list[str], *, bootstrap: int = 500, stack_set: Path | None = None
) -> DemoSetup:
    """Migrate, then create (once) the test set, the challenge with its open detection phase (and, given a
    `stack_set`, its Track 2 phase), an organiser token and a team with a participant token per baseline. A
    second run finds the challenge and issues fresh tokens."""
    from datetime import timedelta

    from sqlalchemy import select

    from app.admin.schemas import TestSetCreate
    from app.admin.service import register_test_set
    from app.auth.service import create_token, hash_password
    from app.challenges.schemas import ChallengeCreate, PhaseCreate
    from app.challenges.service import create_challenge, create_phase
    from app.cli.serve import migrate_database
    from app.db import make_engine, make_session_factory, session_scope
    from app.scoring import ScoringOptions
    from app.tables import Challenge, Participant, Phase, SubmissionKind, Team, TokenScope, utcnow

    migrate_database(database_url)
    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine, write=True)) as db:
            challenge = db.scalar(select(Challenge).where(Challenge.slug == CHALLENGE_SLUG))
            created = challenge is None
            if challenge is None:
                rows = register_test_set(
                    db, data=TestSetCreate(name=f"demo-{test_set.name}", path=str(test_set.resolve()))
                )
                challenge = create_challenge(
                    db,
                    data=ChallengeCreate(
                        slug=CHALLENGE_SLUG,
                        title="MIDOG demo: mitotic figures across four scanners",
                        description=(
                            "A synthetic multi-scanner test set generated on this machine. scanner-A is the "
                            "scanner the reference detectors were trained on; B, C and D drift further from it "
                            "in stain, tone, blur and compression. Detections are matched to mitotic figures "
                            "within 7.5 µm (official MIDOG rules); the per-scanner columns and the ranking "
                            "analysis show how each method copes with scanner domain shift. The teams are "
                            "simulated detectors of known quality."
                        ),
                    ),
                )
                now = utcnow()

                def open_phase(
                    slug: str, title: str, test_set_id: int, options: ScoringOptions, seen: list[str] | None = None
                ) -> None:
                    """An open phase of 30 days taking predictions files and model archives, no daily quota."""
                    create_phase(
                        db,
                        challenge=challenge,
                        data=PhaseCreate(
                            slug=slug,
                            title=title,
                            opens_at=now - timedelta(minutes=5),
                            closes_at=now + timedelta(days=30),
                            test_set_id=test_set_id,
                            daily_quota=None,
                            max_active_per_team=5,
                            allowed_kinds=[SubmissionKind.PREDICTIONS, SubmissionKind.MODEL],
                            time_limit_s=900,
                            scoring_options=options,
                            seen_groups=seen,
                        ),
                    )

                open_phase(
                    PHASE_SLUG,
                    "Preliminary test phase",
                    rows.id,
                    ScoringOptions(bootstrap=bootstrap, seed=0),
                    seen=SEEN_SCANNERS if _has_unseen(rows.cases) else None,
                )
                if stack_set is not None:
                    stacks = register_test_set(
                        db, data=TestSetCreate(name=f"demo-{stack_set.name}", path=str(stack_set.resolve()))
                    )
                    track2 = ScoringOptions(task="classification", bootstrap=bootstrap, seed=0)
                    open_phase(TRACK2_SLUG, "Atypical figures (MIDOG 2025 Track 2)", stacks.id, track2)
            phases = {p.slug: p.id for p in db.scalars(select(Phase).where(Phase.challenge_id == challenge.id))}
            # The demo's tokens live a day at most (a demo is not left running for longer).
            day = utcnow() + timedelta(days=1)
            organiser = create_token(db, scope=TokenScope.ORGANISER, name="demo organiser", expires_at=day).token
            setup = DemoSetup(phase_id=phases[PHASE_SLUG], organiser_token=organiser, created=created, phase_ids=phases)
            for name in teams:
                member = db.scalar(select(Participant).join(Team).where(Team.name == name))
                if member is None:
                    team = Team(name=name, contact_email="baselines@example.org", is_approved=True)
                    email = f"{name.lower().replace(' ', '-').replace(':', '')}@baselines.example.org"
                    member = Participant(
                        team=team, email=email, display_name=name, password_hash=hash_password(secrets.token_urlsafe())
                    )
                    db.add_all([team, member])
                    db.flush()
                setup.team_tokens[name] = create_token(
                    db, scope=TokenScope.PARTICIPANT, participant=member, name="demo", expires_at=day
                ).token
            return setup
    finally:
        engine.dispose()


# --- the running server --------------------------------------------------------------------------------


def revoke_demo_tokens(database_url: str, tokens: list[str]) -> None:
    """The demo's tokens end when the demo stops (and expire after a day should it be killed)."""
    from sqlalchemy import select

    from app.auth.service import hash_token, revoke_token
    from app.db import make_engine, make_session_factory, session_scope
    from app.tables import ApiToken

    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine, write=True)) as db:
            hashes = [hash_token(token) for token in tokens]
            for row in db.scalars(select(ApiToken).where(ApiToken.token_hash.in_(hashes))):
                revoke_token(db, token=row)
    finally:
        engine.dispose()


def start_server(
    env: dict[str, str], *, host: str, port: int, log: Path, gpu_worker: bool = False
) -> subprocess.Popen[bytes]:
    """`midog-eval serve` in its own process group; it dies with the demo (and its workers with it)."""
    argv = [sys.executable, "-c", _CLI_ENTRY, "serve", "--host", host, "--port", str(port), "--log-level", "warning"]
    argv.append("--die-with-parent")
    if not gpu_worker:
        argv.append("--no-gpu-worker")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(process: subprocess.Popen[bytes], timeout_s: float = 7.0) -> None:
    """Ctrl-C for `serve`: uvicorn shuts down and `serve` then stops the workers it started. SIGKILL after
    `timeout_s`, which takes its workers down too (they die with their parent)."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def wait_ready(base_url: str, process: subprocess.Popen[bytes], *, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(base_url + "/api/v1/health", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the server did not answer at {base_url} within {timeout_s:.0f} s")


def _has_unseen(cases: dict[str, Any]) -> bool:
    """Whether the set has a scanner besides the seen ones (a one-scanner demo declares none seen)."""
    return any(c["groups"]["scanner"] not in SEEN_SCANNERS for c in cases.values())


def submit_baseline(api: str, setup: DemoSetup, baseline: Baseline) -> int:
    """Upload as the entry's team; for a baseline, mark the submission a baseline as the organiser."""
    headers = {"Authorization": f"Bearer {setup.team_tokens[baseline.team]}"}
    with baseline.path.open("rb") as fh:
        r = httpx.post(
            f"{api}/phases/{setup.phase_ids.get(baseline.phase, setup.phase_id)}/submissions",
            params={"kind": baseline.kind},
            headers=headers,
            data={"method_name": baseline.method, "description": baseline.description},
            files={"file": (baseline.path.name, fh, "application/octet-stream")},
            timeout=120,
        )
    if not r.is_success:
        raise RuntimeError(f"submitting {baseline.method} failed: {r.status_code} {r.text[:300]}")
    submission_id = int(r.json()["id"])
    if not baseline.is_baseline:
        return submission_id
    admin = {"Authorization": f"Bearer {setup.organiser_token}"}
    r = httpx.patch(f"{api}/admin/submissions/{submission_id}", json={"is_baseline": True}, headers=admin, timeout=30)
    r.raise_for_status()
    return submission_id


def wait_scored(api: str, setup: DemoSetup, ids: list[int], *, timeout_s: float = 300.0) -> dict[int, str]:
    """Poll the organiser view until every evaluation is finished; submission id -> final status."""
    admin = {"Authorization": f"Bearer {setup.organiser_token}"}
    deadline = time.monotonic() + timeout_s
    final: dict[int, str] = {}
    while len(final) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"evaluations {sorted(set(ids) - set(final))} did not finish in {timeout_s:.0f} s")
        for sid in ids:
            if sid in final:
                continue
            body = httpx.get(f"{api}/admin/submissions/{sid}", headers=admin, timeout=30).json()
            latest = body["evaluations"][-1] if body.get("evaluations") else None
            if latest and latest["status"] in {"succeeded", "failed", "cancelled"}:
                final[sid] = latest["status"]
                if latest["status"] != "succeeded":
                    say(f"submission {sid}: {latest['status']}: {latest['error_message']}")
        time.sleep(0.5)
    return final


def wait_boards(api: str, setup: DemoSetup, phases: list[str], *, timeout_s: float = 60.0) -> None:
    """Wait until each phase's board lists its scored entries (`phases`: one slug per scored entry); the
    board is rebuilt just after each result lands, so the demo prints its URL only once it is complete."""
    wanted = {slug: phases.count(slug) for slug in set(phases)}
    deadline = time.monotonic() + timeout_s
    for slug, count in wanted.items():
        url = f"{api}/phases/{setup.phase_ids.get(slug, setup.phase_id)}/leaderboard"
        while len(httpx.get(url, timeout=30).json().get("entries", [])) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {slug} board did not list its {count} entries in {timeout_s:.0f} s")
            time.sleep(0.2)


def baselines_for(test_set: Path, work: Path, *, models: bool, progress: Callable[[str], None] = say) -> list[Baseline]:
    """The blob detector's predictions file, and each reference archive: submitted as a model archive (run by
    the gpu worker in the sandbox) when `models`, else run here by the inference runtime in a child process
    and submitted as its predictions file."""
    progress("computing the blob detector's predictions")
    items = [
        Baseline(
            team="Baseline: blob detector",
            method="Colour deconvolution + DoG blobs (numpy)",
            description=(
                "Haematoxylin channel by Ruifrok-Johnston colour deconvolution with fixed stain vectors, "
                f"difference of Gaussians at 1 and 2.5 µm, local maxima above {BLOB_THRESHOLD}. No training."
            ),
            path=write_blob_predictions(test_set, work / "blob-detector.json"),
        )
    ]
    for archive in reference_archives():
        description = f"Reference model archive {archive.name} (worker/reference), run by the inference runtime."
        common = (f"Baseline: {archive.name}", f"Reference detector {archive.name}")  # team, method
        if models:
            path = zip_archive(archive, work / f"reference-{archive.name}.zip")
            items.append(Baseline(*common, description=description, path=path, kind="model"))
            continue
        progress(f"running the reference archive {archive.name}")
        try:
            predictions = archive_predictions(archive, test_set, work / f"reference-{archive.name}")
        except (subprocess.CalledProcessError, OSError) as exc:
            progress(f"skipping {archive.name}: {exc}")
            continue
        items.append(Baseline(*common, description=description, path=predictions))
    return items


def simulated_entries(test_set: Path, work: Path, *, seed: int) -> list[Baseline]:
    """The simulated teams' predictions files (app.cli.demo_teams), as ranked entries."""
    from app.cli.demo_teams import TEAMS, write_predictions

    return [
        Baseline(
            team=t.team,
            method=t.method,
            description=t.description,
            path=write_predictions(t, test_set, work, seed=seed),
            is_baseline=False,
        )
        for t in TEAMS
    ]


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


@app.command("demo")
def demo_command(
    data_dir: Annotated[Path, typer.Option(help="Everything the demo writes (database, test set, uploads).")] = Path(
        "var/demo"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    scanners: Annotated[int, typer.Option(min=1, max=8, help="Synthetic scanners.")] = 4,
    cases: Annotated[int, typer.Option(min=1, max=50, help="Cases per scanner.")] = 3,
    size: Annotated[str, typer.Option(help="Image size WxH in pixels.")] = "1024x768",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic set.")] = 0,
    sandbox: Annotated[
        bool,
        typer.Option(
            help="Submit the reference archives as model archives run in the sandbox by a gpu-queue worker "
            "(bubblewrap); --no-sandbox runs them here and submits their predictions."
        ),
    ] = True,
    exit_after_ready: Annotated[
        bool, typer.Option("--exit-after-ready", "--no-wait", help="Stop once the leaderboard is up (for tests).")
    ] = False,
) -> None:
    """Create a synthetic multi-scanner challenge, score the baselines, and serve the leaderboard."""
    started = time.monotonic()
    # Ctrl-C and SIGTERM both end in the `finally` below that stops the server and its workers, also when the
    # demo was started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = data_dir.resolve()
    from app.cli.worker import private_files
    from app.settings import Settings, child_environment, use_settings

    # The embedded default, whatever the shell has configured for production: in this process and the server's.
    production = ("MIDOG_DATABASE_URL", "MIDOG_REDIS_URL", "MIDOG_BROKER_URL", "DATABASE_URL", "REDIS_URL")
    env = child_environment(drop=production, MIDOG_DATA_DIR=str(data_dir))

    private_files()
    settings = Settings(data_dir=data_dir, database_url="", redis_url=None, broker_url="")
    use_settings(settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    say(f"generating the synthetic test set ({scanners} scanners x {cases} cases of {size})")
    test_set = build_test_set(
        data_dir / "test-sets" / f"synthetic-{scanners}x{cases}-{size}-seed{seed}",
        scanners=scanners,
        cases=cases,
        size=_size(size),
        seed=seed,
    )
    from worker.datasets.manifest import TestSet, share_images

    share_images(test_set)  # the sandbox's uid reads the images the reference archives run on
    preview = TestSet.open(test_set).preview_path
    if preview.is_file():
        say(f"one tile per scanner: {preview}")
    models = sandbox and sandbox_ready() and bool(reference_archives())
    if sandbox and not models and reference_archives():
        say("bubblewrap (bwrap) is not installed: the reference archives run here instead of in the sandbox")
    baselines = baselines_for(test_set, data_dir / "baselines", models=models)
    baselines += simulated_entries(test_set, data_dir / "teams", seed=seed)
    say(f"generating the synthetic Track 2 set (stacks of atypical and normal figures, {scanners} scanners)")
    from app.cli import demo_track2

    stack_set = demo_track2.build_stack_set(
        data_dir / "test-sets" / f"stacks-{scanners}-seed{seed}", scanners=scanners, seed=seed
    )
    share_images(stack_set)
    baselines += demo_track2.baselines(
        stack_set,
        data_dir / "baselines",
        functools.partial(Baseline, phase=TRACK2_SLUG),
        say,
        models=models,
        zip_archive=zip_archive,
    )
    setup = setup_challenge(settings.database_url, test_set, [b.team for b in baselines], stack_set=stack_set)
    base_url = f"http://{host}:{port}"
    runtime_dir = Path(tempfile.mkdtemp(prefix="midog-demo-sandbox-"))
    # The sandbox's unprivileged uid writes its output below this directory: it must be reachable.
    runtime_dir.chmod(0o755)
    env["MIDOG_SANDBOX_RUNTIME_DIR"] = str(runtime_dir)
    env.setdefault("MIDOG_SANDBOX_BACKEND", "bwrap")
    server = start_server(env, host=host, port=port, log=data_dir / "logs" / "serve.log", gpu_worker=models)
    try:
        wait_ready(base_url, server)
        api = base_url + "/api/v1"
        if setup.created:
            ids = [submit_baseline(api, setup, b) for b in baselines]
            statuses = wait_scored(api, setup, ids, timeout_s=600)
            if not any(s == "succeeded" for s in statuses.values()):
                raise RuntimeError(f"no baseline was scored; see {data_dir / 'logs'}")
            wait_boards(
                api, setup, [b.phase for b, sid in zip(baselines, ids, strict=True) if statuses[sid] == "succeeded"]
            )
        token_file = data_dir / "organiser-token"
        token_file.write_text(setup.organiser_token + "\n")
        token_file.chmod(0o600)
        from app.cli.client import console, leaderboard_table

        board = httpx.get(f"{api}/phases/{setup.phase_id}/leaderboard", timeout=30).json()
        console.print(leaderboard_table(board))
        url = f"{base_url}/phases/{setup.phase_id}/leaderboard"
        typer.echo(f"leaderboard: {url}")
        typer.echo(f"ranking analysis: {base_url}/phases/{setup.phase_id}/analysis")
        if TRACK2_SLUG in setup.phase_ids:
            typer.echo(f"Track 2 leaderboard: {base_url}/phases/{setup.phase_ids[TRACK2_SLUG]}/leaderboard")
        typer.echo(f"organiser token: {token_file}")
        typer.echo(f"ready in {time.monotonic() - started:.1f} s")
        if exit_after_ready:
            return
        typer.echo("serving; press Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
    finally:
        stop_server(server)
        revoke_demo_tokens(settings.database_url, [setup.organiser_token, *setup.team_tokens.values()])
        from worker.safe_delete import discard_tree

        discard_tree(runtime_dir)
