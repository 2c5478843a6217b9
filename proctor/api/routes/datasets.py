"""Routes of `/api/v1/datasets` and `/api/v1/leaderboard`: what jobs may use, how they rank."""

from __future__ import annotations

from fastapi import APIRouter

from proctor import datasets, db, exceptions, leaderboard
from proctor.api.deps import CurrentUser, SettingsDep
from proctor.api.schemas import DatasetList, DatasetOut, ErrorBody, LeaderboardOut
from proctor.config import Settings

router = APIRouter(prefix="/api/v1", tags=["datasets"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 404, 503)
}


@router.get("/datasets", response_model=DatasetList, responses=ERRORS)
def list_datasets(_user: CurrentUser, settings: SettingsDep) -> DatasetList:
    """The datasets a job may name: name, description, size; never their content."""
    return DatasetList(items=[DatasetOut.of(d) for d in datasets.list_all(settings)])


@router.get("/leaderboard", response_model=LeaderboardOut, responses=ERRORS)
def get_leaderboard(
    _user: CurrentUser, settings: SettingsDep, dataset: str | None = None
) -> LeaderboardOut:
    """Each user's best succeeded job on a dataset (none given: jobs without one), ranked."""
    direction = datasets.Direction.HIGHER
    if dataset:
        direction = _known(settings, dataset).direction
    with db.session_scope(settings) as session:
        board = leaderboard.board(session, dataset or None, direction)
    return LeaderboardOut.of(board)


def _known(settings: Settings, name: str) -> datasets.Dataset:
    try:
        return datasets.get(settings, name)
    except exceptions.UnknownDataset as exc:  # a 422 at submission, but here a missing page
        raise exceptions.NotFound(exc.message) from exc
