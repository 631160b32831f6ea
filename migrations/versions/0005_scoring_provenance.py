"""Results record how they were produced; phases and results carry a scoring fingerprint; test sets their
scoring digest (manifest and ground truth).

Backfill: a test set's digest is computed from its files when they are readable. A phase's fingerprint is
computed from its options and its test set. Results of the phase's current evaluation version are taken to
follow the phase's scoring at the upgrade (their provenance says so); results of older versions get no
fingerprint and stay off the board, as they already were.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 18:00:00
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from app.scoring import fingerprint
from worker.datasets.manifest import scoring_digest

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNRECORDED = {
    "recorded": False,
    "note": "scored before results recorded their provenance; taken to follow the phase's scoring at the upgrade",
}


def upgrade() -> None:
    with op.batch_alter_table("test_set") as batch:
        batch.add_column(sa.Column("scoring_digest", sa.String(64), server_default="", nullable=False))
    with op.batch_alter_table("phase") as batch:
        batch.add_column(sa.Column("scoring_fingerprint", sa.String(64), nullable=True))
    with op.batch_alter_table("result") as batch:
        batch.add_column(sa.Column("scoring_fingerprint", sa.String(64), server_default="", nullable=False))
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
        batch.create_index("ix_result_scoring_fingerprint", ["scoring_fingerprint"])
    bind = op.get_bind()
    digests: dict[int, str] = {}
    for test_set_id, manifest_path, manifest_sha256 in bind.execute(
        sa.text("SELECT id, manifest_path, manifest_sha256 FROM test_set")
    ):
        try:
            digest = scoring_digest(Path(manifest_path).parent)
        except OSError:  # files gone: runs on this set fail anyway, the digest only has to be stable
            digest = hashlib.sha256(json.dumps({"manifest": manifest_sha256}).encode()).hexdigest()
        digests[test_set_id] = digest
        bind.execute(sa.text("UPDATE test_set SET scoring_digest = :d WHERE id = :i"), {"d": digest, "i": test_set_id})
    phases = bind.execute(sa.text("SELECT id, test_set_id, scoring_options, evaluation_version FROM phase")).all()
    for phase_id, test_set_id, options, version in phases:
        if test_set_id is None:
            continue
        stored = json.loads(options) if isinstance(options, str) else options
        value = fingerprint(stored or {}, digests[test_set_id])
        bind.execute(sa.text("UPDATE phase SET scoring_fingerprint = :f WHERE id = :i"), {"f": value, "i": phase_id})
        bind.execute(
            sa.text(
                "UPDATE result SET scoring_fingerprint = :f WHERE evaluation_version = :v AND submission_id IN "
                "(SELECT id FROM submission WHERE phase_id = :p)"
            ),
            {"f": value, "v": version, "p": phase_id},
        )
    set_provenance = sa.text("UPDATE result SET provenance = :p").bindparams(sa.bindparam("p", type_=sa.JSON()))
    bind.execute(set_provenance, {"p": UNRECORDED})
    with op.batch_alter_table("result") as batch:
        batch.alter_column("provenance", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("result") as batch:
        batch.drop_index("ix_result_scoring_fingerprint")
        batch.drop_column("provenance")
        batch.drop_column("scoring_fingerprint")
    with op.batch_alter_table("phase") as batch:
        batch.drop_column("scoring_fingerprint")
    with op.batch_alter_table("test_set") as batch:
        batch.drop_column("scoring_digest")
