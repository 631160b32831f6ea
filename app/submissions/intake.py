"""Receiving a submission: the multipart body streamed to disk (app.submissions.upload), the form fields, the
checks of the file in the upload child (predictions, model archive, container image, model tarball) and the
stored row (app.submissions.service). The API's upload route and the submit page both call
`receive_submission`, so a rule holds in both.

No transaction (nor pooled connection) is held while a body streams in or a file is checked: each step that
reads the database commits before the slow part. Never commits the created row: the caller's request does.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth.service import Principal
from app.challenges.service import get_phase
from app.errors import InvalidInput
from app.names import InvalidNameError, clean_name
from app.scoring import canonical_options
from app.settings import Settings
from app.submissions import service
from app.submissions.checker import Checker
from app.submissions.checks import CheckFailedError, case_extents
from app.submissions.schemas import SubmissionRead
from app.submissions.upload import ReceivedFiles, ReceivedUpload, receive_files, receive_upload
from app.submissions.validation import (
    ArchiveInvalid,
    PredictionsInvalid,
    check_magic,
    check_model_magic,
    predictions_suffix,
)
from app.tables import RunMode, SubmissionKind
from app.types import MAX_ID, LongText, ShortText, Url


class SubmissionForm(BaseModel):
    method_name: ShortText = ""
    description: LongText = ""
    paper_url: Url = ""


def _form(fields: dict[str, str]) -> service.SubmissionFields:
    try:
        form = SubmissionForm.model_validate({k: v for k, v in fields.items() if k in SubmissionForm.model_fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    try:
        # The method name is shown on the leaderboard beside the team's: it may not hide characters either.
        method = clean_name(form.method_name, field="method_name") if form.method_name.strip() else ""
    except InvalidNameError as exc:
        raise InvalidInput(str(exc)) from None
    return service.SubmissionFields(method, form.description, form.paper_url)


async def receive_submission(
    request: Request, db: Session, settings: Settings, principal: Principal, phase_id: int, kind: SubmissionKind
) -> SubmissionRead:
    """Stream, check and store one submission: the same steps for the API and the submit page."""
    assert principal.team is not None

    def precheck() -> tuple[dict[str, Any], str, str]:
        phase = get_phase(db, phase_id=phase_id)
        service.check_can_submit(db, phase=phase, team=principal.team, kind=kind)  # type: ignore[arg-type]
        cases = phase.test_set.cases if phase.test_set is not None else {}
        task = phase.test_set.task if phase.test_set is not None else "detection"
        rules = str(canonical_options(phase.scoring_options)["rules"])
        # no transaction (nor pooled connection) is held while a possibly huge body streams in
        db.commit()
        return cases, task, rules

    cases, task, rules = await run_in_threadpool(precheck)
    tmp_dir = settings.storage_path / "tmp"
    if kind is SubmissionKind.CONTAINER:
        limits = {"file": settings.max_upload_bytes(kind), "model": settings.max_model_tarball_bytes}
        received = await receive_files(request, tmp_dir=tmp_dir, limits=limits)
    else:
        single = await receive_upload(request, tmp_dir=tmp_dir, max_file_bytes=settings.max_upload_bytes(kind))
        received = ReceivedFiles({"file": single}, single.fields)
    try:
        upload = received.files.get("file")
        fields = _form(received.fields)
        checker: Checker = request.app.state.checker
        parts = service.ContainerParts()
        if kind is SubmissionKind.CONTAINER:
            parts = await _container_parts(db, settings, principal, received, checker)
            if upload is not None:
                check_magic(kind, upload.head)
                try:
                    await checker.archive(kind.value, upload.path, task=task)
                except CheckFailedError as exc:
                    raise ArchiveInvalid(str(exc)) from None
        else:
            assert upload is not None
            for name in CONTAINER_FIELDS:
                if received.fields.get(name):
                    raise InvalidInput(f"{name}: only container submissions take this field")
            check_magic(kind, upload.head)
            if kind is SubmissionKind.PREDICTIONS:
                await _check_predictions(checker, settings, upload, cases=cases, task=task, rules=rules)
            else:
                try:
                    await checker.archive(kind.value, upload.path, task=task)
                except CheckFailedError as exc:
                    raise ArchiveInvalid(str(exc)) from None
        return await run_in_threadpool(_create, db, settings, principal, phase_id, kind, upload, fields, parts)
    finally:
        received.discard()  # a no-op for each file once it has been moved into storage


CONTAINER_FIELDS = ("image_submission", "run_mode")


async def _check_predictions(
    checker: Checker, settings: Settings, upload: ReceivedUpload, *, cases: dict[str, Any], task: str, rules: str
) -> None:
    upload.path = upload.path.rename(upload.path.with_suffix(predictions_suffix(upload.head)))
    try:
        if task == "classification":
            await checker.classifications(
                upload.path,
                patches={name: int(case.get("patches") or 0) for name, case in cases.items()},
                display_name=upload.filename or "predictions",
            )
        else:
            await checker.predictions(
                upload.path,
                cases=case_extents(cases),
                max_points_per_case=settings.max_points_per_case,
                max_total_points=settings.max_total_points,
                display_name=upload.filename or "predictions",
                rules=rules,
            )
    except CheckFailedError as exc:
        raise PredictionsInvalid(str(exc)) from None


async def _container_parts(
    db: Session, settings: Settings, principal: Any, received: ReceivedFiles, checker: Checker
) -> service.ContainerParts:
    """A container submission's model tarball (checked), the earlier image it reuses and its run mode; every
    refusal names its field."""
    mode_field = received.fields.get("run_mode", "").strip()
    try:
        run_mode = RunMode(mode_field) if mode_field else None
    except ValueError:
        raise InvalidInput("run_mode: exec or invoke (leave it out for the phase's mode)") from None
    model = received.files.get("model")
    image_field = received.fields.get("image_submission", "").strip()
    image_from = None
    if image_field:
        if "file" in received.files:
            raise InvalidInput(
                "image_submission: send either an image (file) or the id of an earlier submission whose image to "
                "reuse, not both"
            )
        if not image_field.isdigit() or int(image_field) > MAX_ID:
            raise InvalidInput("image_submission: the id of an earlier container submission of your team")
        if model is None:
            raise InvalidInput(f"model: reusing the image of submission {image_field} needs a model tarball")

        def earlier() -> Any:
            try:
                return service.reusable_image(
                    db, team_id=principal.team.id, submission_id=int(image_field), storage_dir=settings.storage_path
                )
            finally:
                db.commit()  # no transaction is held while the model tarball is checked

        image_from = await run_in_threadpool(earlier)
    elif "file" not in received.files:
        raise InvalidInput(
            "file: a container submission needs its image (file), or a model tarball (model) with "
            "image_submission naming an earlier container submission of your team"
        )
    if model is not None:
        check_model_magic(model.head)
        try:
            await checker.model_tarball(model.path)
        except CheckFailedError as exc:
            raise ArchiveInvalid(f"model: {exc}") from None
    return service.ContainerParts(model=model, image_from=image_from, run_mode=run_mode)


def _create(
    db: Session,
    settings: Settings,
    principal: Any,
    phase_id: int,
    kind: SubmissionKind,
    upload: ReceivedUpload | None,
    fields: service.SubmissionFields,
    parts: service.ContainerParts,
) -> SubmissionRead:
    phase = get_phase(db, phase_id=phase_id)
    submission = service.create_submission(
        db,
        phase=phase,
        principal=principal,
        kind=kind,
        upload=upload,
        fields=fields,
        storage_dir=settings.storage_path,
        container=parts,
    )
    db.refresh(submission, ["evaluations"])
    return service.participant_view(submission)
