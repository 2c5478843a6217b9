"""jobs, users, contexts, logs, phase histogram

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import proctor.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phase_histogram",
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("phase", "bucket", name=op.f("pk_phase_histogram")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", proctor.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_users_token_hash")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("context_size", sa.Integer(), nullable=False),
        sa.Column("performance", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("image_id", sa.String(length=100), nullable=True),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("sandbox", sa.JSON(), nullable=True),
        sa.Column("timeline", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", proctor.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", proctor.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", proctor.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", proctor.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_jobs_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_owner_id_id", ["owner_id", "id"], unique=False)
        batch_op.create_index("ix_jobs_status_id", ["status", "id"], unique=False)
        batch_op.create_index("ix_jobs_status_lease", ["status", "lease_expires_at"], unique=False)

    op.create_table(
        "job_contexts",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_contexts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_contexts")),
    )
    op.create_table(
        "log_chunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_log_chunks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_chunks")),
    )
    with op.batch_alter_table("log_chunks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_log_chunks_job_stream_id", ["job_id", "stream", "id"], unique=False
        )

    # ### end Alembic commands ###


def downgrade() -> None:
    with op.batch_alter_table("log_chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_log_chunks_job_stream_id")

    op.drop_table("log_chunks")
    op.drop_table("job_contexts")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_lease")
        batch_op.drop_index("ix_jobs_status_id")
        batch_op.drop_index("ix_jobs_owner_id_id")

    op.drop_table("jobs")
    op.drop_table("users")
    op.drop_table("phase_histogram")
