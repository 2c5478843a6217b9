"""Datasets and the leaderboard over HTTP, on a real database; one real job on a dataset."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from sqlalchemy import update

from proctor import db, store, users
from proctor.config import Settings
from proctor.models import Job

from .conftest import Api, ApiFactory, StackFactory, dockerfile, tar_context
from .test_api import TRIVIAL, assert_error

ROOT = Path(__file__).resolve().parents[2]
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def add_dataset(settings: Settings, name: str, descriptor: str | None = None) -> Path:
    assert settings.datasets_dir is not None
    folder = settings.datasets_dir / name
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("x,y\n1,0\n2,1\n")
    (folder / "secret-labels.csv").write_text("SECRET-LABEL-CONTENT\n")
    if descriptor is not None:
        (folder / "dataset.toml").write_text(descriptor)
    return folder


def finished(
    settings: Settings,
    api: Api,
    performance: float,
    minute: int,
    *,
    dataset: str | None = None,
    status: str = "succeeded",
) -> str:
    """A job of `api`'s user that finished `minute` minutes after EPOCH with this score."""
    with db.session_scope(settings) as session:
        owner = users.find_user(session, api.name)
        job = store.create_job(
            session, store.NewJob(owner_id=owner.id, context=b"", timeout=60, dataset=dataset)
        )
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                status=status,
                performance=performance if status == "succeeded" else None,
                finished_at=EPOCH + dt.timedelta(minutes=minute),
            )
        )
        return job.id


def test_datasets_lists_names_descriptions_and_sizes_never_content(
    settings: Settings, api: Api
) -> None:
    add_dataset(settings, "loss-data", 'description = "Lower is better."\ndirection = "lower"\n')
    add_dataset(settings, "plain")

    response = api.get("/api/v1/datasets")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "items": [
            {
                "name": "loss-data",
                "description": "Lower is better.",
                "direction": "lower",
                "files": 2,
                "size_bytes": len("x,y\n1,0\n2,1\n") + len("SECRET-LABEL-CONTENT\n"),
            },
            {
                "name": "plain",
                "description": "",
                "direction": "higher",
                "files": 2,
                "size_bytes": 33,
            },
        ]
    }
    assert "SECRET" not in response.text


def test_datasets_needs_a_token(settings: Settings, api: Api) -> None:
    response = api.http.get("/api/v1/datasets")

    assert_error(response, 401, "unauthorized")


def test_datasets_broken_descriptor_is_left_out_and_named_at_submission(
    settings: Settings, api: Api
) -> None:
    add_dataset(settings, "broken", 'direction = "sideways"\n')
    add_dataset(settings, "fine")

    listed = api.get("/api/v1/datasets").json()["items"]
    response = api.submit(TRIVIAL, dataset="broken")

    assert [item["name"] for item in listed] == ["fine"]
    assert_error(response, 503, "dataset_unavailable", "sideways")


@pytest.mark.parametrize("name", ["nope", "../etc", ".hidden", "a/b"])
def test_datasets_submission_naming_no_dataset_is_422(
    settings: Settings, api: Api, name: str
) -> None:
    add_dataset(settings, "real")

    assert_error(api.submit(TRIVIAL, dataset=name), 422, "unknown_dataset", name)


def test_leaderboard_best_job_per_user_higher_first(
    settings: Settings, make_api: ApiFactory
) -> None:
    add_dataset(settings, "acc")
    alice, bob, carol = make_api("alice"), make_api("bob"), make_api("carol")
    finished(settings, alice, 0.70, 1, dataset="acc")
    best_alice = finished(settings, alice, 0.90, 2, dataset="acc")
    finished(settings, alice, 0.80, 3, dataset="acc")
    best_bob = finished(settings, bob, 0.95, 4, dataset="acc")
    finished(settings, carol, 0.99, 5, dataset="acc", status="failed")
    finished(settings, carol, 0.99, 6, dataset=None)  # another leaderboard

    board = alice.get("/api/v1/leaderboard?dataset=acc").json()

    assert board["dataset"] == "acc"
    assert board["direction"] == "higher"
    assert [(e["rank"], e["user"], e["job_id"], e["performance"]) for e in board["entries"]] == [
        (1, "bob", best_bob, 0.95),
        (2, "alice", best_alice, 0.90),
    ]
    assert [(p["user"], p["performance"]) for p in board["history"]] == [
        ("alice", 0.70),
        ("alice", 0.90),
        ("alice", 0.80),
        ("bob", 0.95),
    ]
    assert board["entries"][0]["finished_at"].startswith("2026-01-01T00:04:00")


def test_leaderboard_lower_is_better_dataset_ranks_lowest_first(
    settings: Settings, make_api: ApiFactory
) -> None:
    add_dataset(settings, "loss", 'direction = "lower"\n')
    alice, bob = make_api("alice"), make_api("bob")
    finished(settings, alice, 0.30, 1, dataset="loss")
    finished(settings, alice, 0.10, 2, dataset="loss")
    finished(settings, bob, 0.20, 3, dataset="loss")

    board = bob.get("/api/v1/leaderboard?dataset=loss").json()

    assert board["direction"] == "lower"
    assert [(e["user"], e["performance"]) for e in board["entries"]] == [
        ("alice", 0.10),
        ("bob", 0.20),
    ]


def test_leaderboard_ties_go_to_the_earlier_finish(
    settings: Settings, make_api: ApiFactory
) -> None:
    alice, bob = make_api("alice"), make_api("bob")
    finished(settings, bob, 0.5, 9)
    later_alice = finished(settings, alice, 0.5, 10)
    earlier_alice = finished(settings, alice, 0.5, 2)

    entries = alice.get("/api/v1/leaderboard").json()["entries"]

    assert [(e["user"], e["job_id"]) for e in entries] == [
        ("alice", earlier_alice),
        ("bob", entries[1]["job_id"]),
    ]
    assert later_alice not in {e["job_id"] for e in entries}


def test_leaderboard_shows_names_and_scores_but_not_other_users_jobs(
    settings: Settings, make_api: ApiFactory
) -> None:
    alice, bob = make_api("alice"), make_api("bob")
    bobs = finished(settings, bob, 0.8, 1)

    entry = alice.get("/api/v1/leaderboard").json()["entries"][0]

    assert set(entry) == {"rank", "user", "job_id", "performance", "finished_at"}
    assert entry["user"] == "bob"
    assert_error(alice.get(f"/api/v1/jobs/{bobs}"), 404, "not_found")
    assert_error(alice.get(f"/api/v1/jobs/{bobs}/logs"), 404, "not_found")


def test_leaderboard_unknown_dataset_is_404(settings: Settings, api: Api) -> None:
    assert_error(api.get("/api/v1/leaderboard?dataset=nope"), 404, "not_found", "nope")


def test_leaderboard_example_model_scores_on_example_dataset(make_stack: StackFactory) -> None:
    api = make_stack()
    settings: Settings = api.http.app.state.settings  # type: ignore[attr-defined]
    assert settings.datasets_dir is not None
    shutil.copytree(
        ROOT / "examples" / "datasets" / "breast-cancer", settings.datasets_dir / "breast-cancer"
    )
    context = {
        name: (ROOT / "examples" / "breast-cancer-model" / name).read_bytes()
        for name in ("Dockerfile", "train.py")
    }
    job = api.run(tar_context(context), dataset="breast-cancer")

    assert job["status"] == "succeeded", job
    assert 0.9 < job["performance"] <= 1.0
    assert set(job["metrics"]) == {"auc", "log_loss"}
    entries = api.get("/api/v1/leaderboard?dataset=breast-cancer").json()["entries"]
    assert [(e["user"], e["job_id"]) for e in entries] == [(api.name, job["id"])]


def test_dataset_is_read_only_and_only_the_named_one_is_mounted(
    make_stack: StackFactory,
) -> None:
    api = make_stack()
    stack_settings: Settings = api.http.app.state.settings  # type: ignore[attr-defined]
    add_dataset(stack_settings, "one")
    add_dataset(stack_settings, "two")
    script = (
        "ls /data/input; cat /data/input/train.csv; "
        "(echo x > /data/input/train.csv) 2>/dev/null && echo WRITABLE; "
        "ls /data/input/../two 2>/dev/null && echo SIBLING; "
        "echo '{\"perf\": 1}' > /data/perf.json"
    )

    job = api.run(dockerfile(script), dataset="one")
    run_log = api.get(f"/api/v1/jobs/{job['id']}/logs?stream=run").text

    assert job["status"] == "succeeded", job
    assert "secret-labels.csv" in run_log and "1,0" in run_log
    assert "WRITABLE" not in run_log and "SIBLING" not in run_log
