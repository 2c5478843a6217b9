"""The leaderboard: each user's best succeeded job on a dataset, ranked by its direction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from proctor.datasets import Direction
from proctor.jobs import Status
from proctor.models import Job, User

ENTRIES_MAX = 1000
HISTORY_MAX = 2000  # the most recent scores kept for the chart of scores over time


@dataclass(frozen=True)
class Score:
    user: str
    job_id: str
    performance: float
    finished_at: dt.datetime


@dataclass(frozen=True)
class Entry:
    rank: int
    score: Score


@dataclass(frozen=True)
class Board:
    dataset: str | None
    direction: Direction
    entries: list[Entry]
    # Every succeeded job's score, oldest first: ranks give no sense of progress over time.
    history: list[Score]


def _scored(dataset: str | None) -> list[ColumnElement[bool]]:
    on_dataset = Job.dataset.is_(None) if dataset is None else Job.dataset == dataset
    return [Job.status == Status.SUCCEEDED.value, Job.performance.is_not(None), on_dataset]


def board(session: Session, dataset: str | None, direction: Direction) -> Board:
    """Best job per user, best first; ties go to the earlier finish (then the earlier job)."""
    better = Job.performance.desc() if direction is Direction.HIGHER else Job.performance.asc()
    ranked = (
        select(
            Job.id,
            Job.owner_id,
            Job.performance,
            Job.finished_at,
            func.row_number()
            .over(partition_by=Job.owner_id, order_by=(better, Job.finished_at, Job.id))
            .label("place"),
        )
        .where(*_scored(dataset))
        .subquery()
    )
    best = ranked.c.performance.desc() if direction is Direction.HIGHER else ranked.c.performance
    rows = session.execute(
        select(User.name, ranked.c.id, ranked.c.performance, ranked.c.finished_at)
        .join(User, User.id == ranked.c.owner_id)
        .where(ranked.c.place == 1)
        .order_by(best, ranked.c.finished_at, ranked.c.id)
        .limit(ENTRIES_MAX)
    ).all()
    entries = [Entry(rank, _score(*row)) for rank, row in enumerate(rows, start=1)]
    recent = session.execute(
        select(User.name, Job.id, Job.performance, Job.finished_at)
        .join(User, User.id == Job.owner_id)
        .where(*_scored(dataset))
        .order_by(Job.finished_at.desc(), Job.id.desc())
        .limit(HISTORY_MAX)
    ).all()
    history = [_score(*row) for row in reversed(recent)]
    return Board(dataset, direction, entries, history)


def _score(
    user: str, job_id: str, performance: float | None, finished_at: dt.datetime | None
) -> Score:
    # Succeeded jobs always have both; the query filters on the first.
    assert performance is not None and finished_at is not None
    return Score(user, job_id, performance, finished_at)
