"""Job state transitions and outcomes."""

from __future__ import annotations

import pytest

from proctor.jobs import ErrorCode, Outcome, Status, can_move


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.QUEUED, Status.BUILDING),
        (Status.BUILDING, Status.SCANNING),
        (Status.SCANNING, Status.RUNNING),
        (Status.RUNNING, Status.SUCCEEDED),
        (Status.QUEUED, Status.CANCELLED),
        (Status.BUILDING, Status.FAILED),
        (Status.RUNNING, Status.QUEUED),  # its worker died: tried again
        (Status.BUILDING, Status.RUNNING),
    ],
)
def test_can_move_forward_and_back_to_queue(current: Status, target: Status) -> None:
    assert can_move(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.RUNNING, Status.BUILDING),
        (Status.SCANNING, Status.BUILDING),
        (Status.SUCCEEDED, Status.QUEUED),
        (Status.FAILED, Status.RUNNING),
        (Status.CANCELLED, Status.SUCCEEDED),
        (Status.QUEUED, Status.QUEUED),
    ],
)
def test_can_move_never_backwards_or_out_of_final(current: Status, target: Status) -> None:
    assert not can_move(current, target)


def test_outcome_failed_with_cancelled_code_is_cancelled_state() -> None:
    assert Outcome.failed(ErrorCode.CANCELLED, "stop").status is Status.CANCELLED
    assert Outcome.failed(ErrorCode.TIMEOUT, "slow").status is Status.FAILED


def test_status_finality() -> None:
    assert {s for s in Status if s.is_final} == {
        Status.SUCCEEDED,
        Status.FAILED,
        Status.CANCELLED,
    }
    assert {s for s in Status if s.is_active} == {Status.BUILDING, Status.SCANNING, Status.RUNNING}
