"""Job storage on a real database: claiming, leases, guarded updates."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, update

from proctor import changes, db, exceptions, jobs, pipeline, store, users
from proctor.config import Settings
from proctor.jobs import ErrorCode, Outcome, Status
from proctor.models import Base, Job, PhaseHistogram, User

from ..conftest import SettingsFactory


def queue_jobs(settings: Settings, count: int) -> list[str]:
    users.add_user(settings, "alice", admin=False)
    with db.session_scope(settings) as session:
        owner = users.find_user(session, "alice")
        return [
            store.create_job(session, store.NewJob(owner_id=owner.id, context=b"x", timeout=5)).id
            for _ in range(count)
        ]


def expire_leases(settings: Settings) -> None:
    with db.session_scope(settings) as session:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        session.execute(update(Job).values(lease_expires_at=past))


def job(settings: Settings, job_id: str) -> Job:
    with db.session_scope(settings) as session:
        found = session.get(Job, job_id)
        assert found is not None
        return found


def test_created_job_is_stored_as_returned_with_its_context_and_wakes_workers(
    settings: Settings,
) -> None:
    users.add_user(settings, "alice", admin=False)
    heard, listening, stop = threading.Event(), threading.Event(), threading.Event()
    listener = threading.Thread(
        target=changes.listen,
        args=(settings.database_url, store.QUEUE_CHANNEL, lambda _: heard.set(), stop, listening),
        daemon=True,
    )
    listener.start()
    try:
        assert listening.wait(10)
        with db.session_scope(settings) as session:
            owner = users.find_user(session, "alice")
            new = store.NewJob(
                owner_id=owner.id, context=b"ctx", timeout=7, name="n", dataset="d", gpus=2
            )
            created = store.create_job(session, new)
        assert heard.wait(10), "no worker would hear of the queued job"
    finally:
        stop.set()
        listener.join(10)

    stored = job(settings, created.id)
    columns = [column.key for column in Job.__table__.columns]
    assert {c: getattr(stored, c) for c in columns} == {c: getattr(created, c) for c in columns}
    assert (stored.status, stored.name, stored.gpus, stored.context_size) == ("queued", "n", 2, 3)
    with db.session_scope(settings) as session:
        assert store.load_context(session, created.id) == b"ctx"


def test_claim_takes_oldest_first_and_each_job_once(settings: Settings) -> None:
    ids = queue_jobs(settings, 20)
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while True:
            with db.session_scope(settings) as session:
                taken = store.claim(session, name, 30)
                if taken is None:
                    return
                with lock:
                    claimed.append(taken.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(claimed) == sorted(ids)
    assert len(set(claimed)) == len(ids)


def test_claim_sets_lease_attempts_and_timeline(settings: Settings) -> None:
    [job_id] = queue_jobs(settings, 1)

    with db.session_scope(settings) as session:
        taken = store.claim(session, "w1", 30)
        assert store.claim(session, "w2", 30) is None

    assert taken is not None
    assert taken.status == Status.BUILDING
    assert taken.lease_owner == "w1"
    assert taken.attempts == 1
    assert taken.lease_expires_at is not None
    assert taken.lease_expires_at > dt.datetime.now(dt.UTC)
    assert set(job(settings, job_id).timeline) == {"queued", "building"}


def test_expired_lease_requeues_then_ends_lost(settings: Settings) -> None:
    [job_id] = queue_jobs(settings, 1)
    for attempt in (1, 2):
        with db.session_scope(settings) as session:
            assert store.claim(session, f"w{attempt}", 30) is not None
        expire_leases(settings)
        with db.session_scope(settings) as session:
            assert store.release_expired(session, max_attempts=2) == 1
        expected = Status.QUEUED if attempt == 1 else Status.FAILED
        assert job(settings, job_id).status == expected

    lost = job(settings, job_id)
    assert lost.error_code == ErrorCode.LOST
    assert lost.attempts == 2


def test_stale_worker_cannot_overwrite_newer_attempt(settings: Settings) -> None:
    [job_id] = queue_jobs(settings, 1)
    with db.session_scope(settings) as session:
        store.claim(session, "old", 30)
    expire_leases(settings)
    with db.session_scope(settings) as session:
        store.release_expired(session, max_attempts=3)
        store.claim(session, "new", 30)

    with db.session_scope(settings) as session:
        assert not store.finish(session, job_id, "old", Outcome.succeeded(1.0, {}))
        assert not store.advance(session, job_id, "old", Status.RUNNING)
        assert store.finish(session, job_id, "new", Outcome.succeeded(0.5, {}))

    final = job(settings, job_id)
    assert (final.status, final.performance, final.attempts) == (Status.SUCCEEDED, 0.5, 2)


def test_give_back_does_not_count_an_attempt(settings: Settings) -> None:
    [job_id] = queue_jobs(settings, 1)
    with db.session_scope(settings) as session:
        store.claim(session, "w", 30)
        assert store.give_back(session, job_id, "w")

    back = job(settings, job_id)
    assert (back.status, back.attempts, back.lease_owner) == (Status.QUEUED, 0, None)


def test_cancel_flag_blocks_advance(settings: Settings) -> None:
    [job_id] = queue_jobs(settings, 1)
    with db.session_scope(settings) as session:
        store.claim(session, "w", 30)
        alice = users.find_user(session, "alice")
        store.request_cancel(session, job_id, alice)
        assert store.cancel_requested(session, [job_id]) == {job_id}
        assert not store.advance(session, job_id, "w", Status.SCANNING)


def test_request_cancel_of_final_job_conflicts(settings: Settings) -> None:
    [job_id] = queue_jobs(settings, 1)
    with db.session_scope(settings) as session:
        alice = session.get(User, users.find_user(session, "alice").id)
        assert alice is not None
        store.request_cancel(session, job_id, alice)
    with pytest.raises(exceptions.Conflict), db.session_scope(settings) as session:
        store.request_cancel(session, job_id, users.find_user(session, "alice"))


def test_phase_histogram_is_cumulative(settings: Settings) -> None:
    with db.session_scope(settings) as session:
        store.observe_phase(session, Status.RUNNING, 0.3)
        store.observe_phase(session, Status.RUNNING, 7)
    with db.session_scope(settings) as session:
        running = store.phase_histograms(session)["running"]

    assert running["0.25"] == 0
    assert running["0.5"] == 1
    assert running["10.0"] == 2
    assert running["+Inf"] == 2
    assert running["sum"] == pytest.approx(7.3)


def test_phase_observations_in_a_batch_count_as_one_by_one(settings: Settings) -> None:
    batch = [
        (Status.RUNNING, 0.3),
        (Status.BUILDING, 2.0),
        (Status.RUNNING, 7),
        (Status.RUNNING, 0.3),
    ]
    with db.session_scope(settings) as session:
        store.observe_phases(session, batch[:2])  # creates the rows of both phases
        store.observe_phases(session, batch[2:])
        batched = store.phase_histograms(session)
        session.execute(delete(PhaseHistogram))
        for phase, seconds in batch:
            store.observe_phase(session, phase, seconds)
        assert store.phase_histograms(session) == batched
    assert batched["running"]["0.5"] == 2
    assert batched["running"]["10.0"] == 3
    assert batched["running"]["sum"] == pytest.approx(7.6)
    assert batched["building"]["2.5"] == 1
    assert batched["building"]["1.0"] == 0


def test_cursor_round_trip_and_garbage() -> None:
    job_id = store.new_job_id()

    assert store.decode_cursor(store.encode_cursor(job_id)) == job_id
    with pytest.raises(exceptions.InvalidParameter):
        store.decode_cursor("not a cursor")


def test_migrations_match_the_models(settings: Settings) -> None:
    with db.get_engine(settings.database_url).connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []


def queue_for(settings: Settings, name: str, count: int) -> list[str]:
    try:
        users.add_user(settings, name, admin=False)
    except exceptions.Conflict:
        pass
    with db.session_scope(settings) as session:
        owner = users.find_user(session, name)
        new = store.NewJob(owner_id=owner.id, context=b"x", timeout=5)
        return [store.create_job(session, new).id for _ in range(count)]


def test_claim_is_fair_across_users(settings: Settings) -> None:
    a_jobs = queue_for(settings, "a", 30)
    [b_job] = queue_for(settings, "b", 1)

    with db.session_scope(settings) as session:
        order = [store.claim(session, "w", 30) for _ in range(4)]

    assert [job.id for job in order if job] == [a_jobs[0], b_job, a_jobs[1], a_jobs[2]]


def test_claim_respects_running_cap_per_user(settings: Settings) -> None:
    a_jobs = queue_for(settings, "a", 3)
    [b_job] = queue_for(settings, "b", 1)

    with db.session_scope(settings) as session:
        taken = [store.claim(session, "w", 30, max_running_per_user=1) for _ in range(3)]

    assert [job.id if job else None for job in taken] == [a_jobs[0], b_job, None]


def stored_run_log(settings: Settings, job_id: str) -> str:
    with db.session_scope(settings) as session:
        return store.read_logs(session, job_id, jobs.Stream.RUN)


def test_log_sink_stores_a_lone_line_without_waiting_for_more_output(settings: Settings) -> None:
    [job_id] = queue_jobs(settings, 1)
    sink = pipeline.LogSink(settings, job_id, jobs.Stream.RUN)

    sink("first\n")  # written at once after the sink was made: not due yet, so buffered
    sink("second\n")
    time.sleep(pipeline.LOG_FLUSH_SECONDS * 3)

    assert stored_run_log(settings, job_id) == "first\nsecond\n"
    sink("third\n")
    sink.flush()
    assert stored_run_log(settings, job_id) == "first\nsecond\nthird\n"


def test_sessionmaker_is_made_once_per_database(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    other = make_settings(home=settings.home / "other")
    factory = db.sessionmaker_for(settings)

    assert db.sessionmaker_for(settings) is factory
    assert db.sessionmaker_for(other) is not factory
    db.dispose_engines()
    assert db.sessionmaker_for(settings) is not factory
    with db.session_scope(settings) as session:
        assert store.counts_by_status(session) == {}


# --- SQLite: one writing session at a time per process ------------------------------

TURN_SECONDS = 5  # far below the 30 s a leaked turn would hold a writer up


def sqlite_only(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--database") != "sqlite":
        pytest.skip("the write turn is SQLite's: runs with --database sqlite")


def queue_one(settings: Settings, owner_id: int) -> None:
    with db.session_scope(settings) as session:
        store.create_job(session, store.NewJob(owner_id=owner_id, context=b"x", timeout=5))


def queued(settings: Settings, owner_id: int) -> int:
    with db.session_scope(settings) as session:
        return store.queued_count(session, owner_id)


def write_in_thread(settings: Settings, owner_id: int) -> threading.Event:
    """Queue a job from another thread; the event is set once it is committed."""
    done = threading.Event()

    def write() -> None:
        queue_one(settings, owner_id)
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done


def alice(settings: Settings) -> int:
    users.add_user(settings, "alice", admin=False)
    with db.session_scope(settings) as session:
        return users.find_user(session, "alice").id


def test_sqlite_writers_of_one_process_take_turns_and_lose_nothing(
    request: pytest.FixtureRequest, settings: Settings
) -> None:
    sqlite_only(request)
    owner = alice(settings)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(25):
                queue_one(settings, owner)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert queued(settings, owner) == 200


def test_sqlite_write_turn_ends_with_commit_rollback_or_close(
    request: pytest.FixtureRequest, settings: Settings
) -> None:
    sqlite_only(request)
    owner = alice(settings)
    new = store.NewJob(owner_id=owner, context=b"x", timeout=5)

    queue_one(settings, owner)
    assert write_in_thread(settings, owner).wait(TURN_SECONDS), "turn kept after commit"

    with pytest.raises(RuntimeError), db.session_scope(settings) as session:
        store.create_job(session, new)
        session.flush()
        raise RuntimeError("the caller failed mid-transaction")
    assert write_in_thread(settings, owner).wait(TURN_SECONDS), "turn kept after rollback"

    bare = db.sessionmaker_for(settings)()
    bare.execute(update(Job).values(name="renamed"))
    bare.close()  # neither committed nor rolled back by the caller
    assert write_in_thread(settings, owner).wait(TURN_SECONDS), "turn kept after close"
    assert queued(settings, owner) == 4


def test_sqlite_reading_session_leaves_the_turn_to_writers(
    request: pytest.FixtureRequest, settings: Settings
) -> None:
    sqlite_only(request)
    owner = alice(settings)
    with db.session_scope(settings) as reading:
        store.queued_count(reading, owner)
        # Open, having read: a writer elsewhere in the process goes ahead meanwhile.
        assert write_in_thread(settings, owner).wait(TURN_SECONDS)
    assert queued(settings, owner) == 1
