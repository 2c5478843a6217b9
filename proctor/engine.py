"""The container engine behind a small typed interface, and its Docker implementation.

docker-py is untyped and raises its own errors; this module is the only place
that sees either. A Kubernetes executor would implement the same `Executor`.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import requests
from docker.models.images import Image
from docker.transport.unixconn import UnixHTTPAdapter
from docker.types import DeviceRequest, LogConfig, Ulimit

from proctor import exceptions
from proctor.cache import ExpiringCache
from proctor.sandbox import (
    DATASET_MOUNT,
    LOG_DRIVER,
    NANO_CPUS_PER_CPU,
    OUTPUT_MOUNT,
    TMP_MOUNT,
    SandboxProfile,
)

JOB_LABEL = "proctor.job"
WORKER_LABEL = "proctor.worker"  # on run containers: the worker that started them
ENGINE_TIMEOUT_SECONDS = 60
WAIT_POLL_SECONDS = 0.2
KILL_GRACE_SECONDS = 10
LOG_DRAIN_SECONDS = 2
SAVE_CHUNK_BYTES = 1024 * 1024
ENGINE_LOG_FACTOR = 4
ENGINE_LOG_SLACK_BYTES = 1024 * 1024
# An image id is the digest of its configuration, history included: what was read once
# stays true. Kept for the base images that job after job is built on.
HISTORY_CACHE_SECONDS = 3600
HISTORY_CACHE_ENTRIES = 256
# The classic builder looks for a cached image among the children of a step's parent;
# when another job's label-step image (a child of the same parent) is removed during
# that lookup, the build fails with this error at proctor's own LABEL step. It is the
# engine's race, not the submission's fault, and building again gets past it.
BUILD_CACHE_RACE_ATTEMPTS = 3
_CACHE_RACE_ERROR = re.compile(r'^unable to find image "?sha256:[0-9a-f]{64}"?$')

LogSink = Callable[[str], None]


@dataclass(frozen=True)
class ImageInfo:
    """An image's configuration as the engine reports it; what the checks read without
    opening its layers."""

    id: str
    user: str
    size_bytes: int
    env: tuple[str, ...] = ()  # "NAME=value"
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()  # "8080/tcp"
    diff_ids: tuple[str, ...] = ()  # the layers, bottom first ("sha256:…")
    history: tuple[str, ...] = ()  # each layer's `created_by`, bottom first


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None
    oom_killed: bool = False
    timed_out: bool = False
    aborted: bool = False
    container_left: bool = False  # removing the container failed: clean-up must sweep


@dataclass(frozen=True)
class ManagedContainer:
    id: str
    job_id: str
    worker: str


class Executor(Protocol):
    """What the pipeline needs from a container engine."""

    def close(self) -> None: ...

    def ping(self) -> None: ...

    def find_image(self, reference: str) -> ImageInfo | None:
        """The image's configuration, or None when the engine has no such image."""
        ...

    def pull(self, reference: str) -> None: ...

    def build(
        self,
        job_id: str,
        context: bytes,
        *,
        memory_bytes: int,
        deadline: float,
        abort: threading.Event,
        on_log: LogSink,
    ) -> str: ...

    def inspect_image(self, image_id: str) -> ImageInfo: ...

    def save_image(self, image_id: str, destination: Path) -> None: ...

    def run(
        self,
        job_id: str,
        image_id: str,
        profile: SandboxProfile,
        output_dir: Path,
        *,
        dataset_dir: Path | None,
        abort: threading.Event,
        on_log: LogSink,
    ) -> RunResult: ...

    def remove_image(self, image_id: str) -> None: ...

    def remove_containers(self, job_id: str) -> None: ...

    def managed_containers(self) -> list[ManagedContainer]: ...

    def managed_images(self) -> set[str]: ...

    def remove_container(self, container_id: str) -> None: ...

    def remove_job_images(self, job_id: str) -> None: ...


def is_cache_race(error: exceptions.BuildError) -> bool:
    """Whether a build failed on the engine's cache race at proctor's own label step."""
    step = error.step or ""
    return f"LABEL {JOB_LABEL}=" in step and bool(_CACHE_RACE_ERROR.match(error.message))


def job_labels(job_id: str) -> dict[str, str]:
    # One label: the classic builder commits one more image per build label, 60-200 ms each.
    return {JOB_LABEL: job_id}


# Everything proctor creates carries the job label: the key alone selects it.
_MANAGED_FILTER: dict[str, str | list[str] | bool] = {"label": JOB_LABEL}


class DockerEngine:
    """`Executor` on a Docker engine, through the Engine API (docker-py)."""

    def __init__(self, base_url: str | None = None, *, owner: str = "") -> None:
        self._base_url = base_url
        self._owner = owner
        self._connected: docker.DockerClient | None = None
        self._connect_lock = threading.Lock()
        self._histories: ExpiringCache[str, tuple[str, ...]] = ExpiringCache(
            HISTORY_CACHE_SECONDS, HISTORY_CACHE_ENTRIES
        )

    @property
    def _client(self) -> docker.DockerClient:
        # Connecting asks the engine for its API version, so it happens on first use:
        # an engine that is down then fails a call (and is retried), not construction.
        with self._connect_lock:
            if self._connected is None:
                socket_path = (self._base_url or "").removeprefix("unix://")
                if self._base_url and self._base_url.startswith("unix://"):
                    # Checked here: docker-py leaks a socket when it connects to nothing.
                    if not Path(socket_path).exists():
                        raise exceptions.EngineUnavailable(
                            f"the Docker engine is unreachable: no socket at {socket_path}"
                        )
                try:
                    client = (
                        docker.DockerClient(base_url=self._base_url, timeout=ENGINE_TIMEOUT_SECONDS)
                        if self._base_url
                        else docker.from_env(timeout=ENGINE_TIMEOUT_SECONDS)
                    )
                except docker.errors.DockerException as exc:
                    raise exceptions.EngineUnavailable(
                        f"the Docker engine is unreachable: {exc}"
                    ) from exc
                _share_socket_connections(client)
                self._connected = client
            return self._connected

    def close(self) -> None:
        with self._connect_lock:
            if self._connected is not None:
                self._connected.close()
                self._connected = None

    def ping(self) -> None:
        with _engine_errors():
            self._client.ping()

    def find_image(self, reference: str) -> ImageInfo | None:
        with _engine_errors():
            try:
                image = self._client.images.get(reference)
            except docker.errors.ImageNotFound:
                return None
        return self._image_info(image)

    def pull(self, reference: str) -> None:
        with _engine_errors():
            try:
                self._client.images.pull(reference)
            except docker.errors.APIError as exc:
                raise exceptions.ImageMissing(
                    f"base image {reference} could not be pulled: {exc.explanation}"
                ) from exc

    def build(
        self,
        job_id: str,
        context: bytes,
        *,
        memory_bytes: int,
        deadline: float,
        abort: threading.Event,
        on_log: LogSink,
    ) -> str:
        """Build without network; return the image id. Stops at `deadline` or on `abort`."""
        for attempt in range(1, BUILD_CACHE_RACE_ATTEMPTS + 1):
            try:
                return self._build_once(job_id, context, memory_bytes, deadline, abort, on_log)
            except exceptions.BuildError as exc:
                if attempt == BUILD_CACHE_RACE_ATTEMPTS or not is_cache_race(exc):
                    raise
                on_log("[proctor] a concurrent build removed a cached image; building again\n")
        raise AssertionError("unreachable")

    def _build_once(
        self,
        job_id: str,
        context: bytes,
        memory_bytes: int,
        deadline: float,
        abort: threading.Event,
        on_log: LogSink,
    ) -> str:
        api = self._client.api
        params = {
            "rm": "1",
            "forcerm": "1",
            "pull": "",
            "networkmode": "none",
            "memory": str(memory_bytes),
            "memswap": str(memory_bytes),
            "labels": json.dumps(job_labels(job_id)),
        }
        # docker-py's build() hides the HTTP response; posting to /build ourselves keeps
        # it, so that cutting the stream (time limit, cancel) makes the engine stop.
        with _engine_errors():
            response = api.post(
                f"{api.base_url}/v{api.api_version}/build",
                data=context,
                params=params,
                headers={"Content-Type": "application/x-tar"},
                stream=True,
                timeout=None,
            )
        if response.status_code >= 400:
            detail = response.text.strip()
            response.close()
            raise exceptions.BuildError(f"the engine refused the build: {detail}")
        stop = _Stopper(response)
        watchdog = threading.Thread(
            target=stop.when, args=(abort, deadline), name=f"build-watch-{job_id}", daemon=True
        )
        watchdog.start()
        try:
            return self._follow_build(response, stop, on_log)
        finally:
            stop.finished.set()
            watchdog.join()
            response.close()

    def _follow_build(self, response: requests.Response, stop: _Stopper, on_log: LogSink) -> str:
        image_id: str | None = None
        last_step: str | None = None
        try:
            for message in _json_lines(response):
                if "stream" in message:
                    text = str(message["stream"])
                    if text.startswith("Step "):
                        last_step = text.strip()
                    on_log(text)
                elif "aux" in message and isinstance(message["aux"], dict):
                    image_id = str(message["aux"].get("ID") or image_id or "")
                elif "error" in message:
                    error = str(message["error"]).strip()
                    on_log(f"ERROR: {error}\n")
                    if stop.fired:
                        raise exceptions.BuildAborted(stop.reason)
                    raise exceptions.BuildError(error, step=last_step)
                elif "status" in message:
                    on_log(f"{message['status']}\n")
        except (requests.RequestException, OSError, ValueError) as exc:
            if stop.fired:
                raise exceptions.BuildAborted(stop.reason) from exc
            raise exceptions.EngineError(f"the build stream broke: {exc}") from exc
        if stop.fired:
            raise exceptions.BuildAborted(stop.reason)
        if not image_id:
            raise exceptions.BuildError("the engine reported no image id", step=last_step)
        return image_id

    def inspect_image(self, image_id: str) -> ImageInfo:
        with _engine_errors():
            image = self._client.images.get(image_id)
        return self._image_info(image)

    def _image_info(self, image: Image) -> ImageInfo:
        image_id, attrs = str(image.id), image.attrs
        history = self._histories.get(image_id)
        if history is None:
            with _engine_errors():
                newest_first = image.history()
            history = tuple(str(h.get("CreatedBy") or "") for h in reversed(newest_first))
            self._histories.put(image_id, history)
        config = attrs.get("Config") or {}
        return ImageInfo(
            id=image_id,
            user=str(config.get("User") or ""),
            size_bytes=int(attrs.get("Size") or 0),
            env=tuple(str(e) for e in config.get("Env") or ()),
            labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
            exposed_ports=tuple(sorted(str(p) for p in config.get("ExposedPorts") or {})),
            diff_ids=tuple(str(d) for d in (attrs.get("RootFS") or {}).get("Layers") or ()),
            history=history,
        )

    def save_image(self, image_id: str, destination: Path) -> None:
        """Write the image as `docker save` does (what scanners read)."""
        with _engine_errors():
            image = self._client.images.get(image_id)
            with destination.open("wb") as out:
                for chunk in image.save(chunk_size=SAVE_CHUNK_BYTES, named=False):
                    out.write(chunk)

    def run(
        self,
        job_id: str,
        image_id: str,
        profile: SandboxProfile,
        output_dir: Path,
        *,
        dataset_dir: Path | None,
        abort: threading.Event,
        on_log: LogSink,
    ) -> RunResult:
        options = _container_options(job_id, profile, output_dir, dataset_dir)
        options["labels"][WORKER_LABEL] = self._owner
        with _engine_errors():
            container = self._client.containers.create(image_id, **options)
        try:
            with _engine_errors():
                container.start()
            logs = threading.Thread(
                target=_pump_logs, args=(container, on_log), name=f"logs-{job_id}", daemon=True
            )
            logs.start()
            result = self._wait(container, profile.timeout_seconds, abort)
            logs.join(timeout=LOG_DRAIN_SECONDS)  # the container is gone: its stream ends
        finally:
            removed = _remove_quietly(container)
        return replace(result, container_left=not removed)

    def _wait(self, container: Any, timeout: float, abort: threading.Event) -> RunResult:
        exited = threading.Event()

        def wait_exit() -> None:
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                container.wait()
            exited.set()

        threading.Thread(target=wait_exit, daemon=True).start()
        deadline = time.monotonic() + timeout
        timed_out = aborted = False
        while not exited.wait(WAIT_POLL_SECONDS):
            if abort.is_set() or time.monotonic() >= deadline:
                aborted, timed_out = abort.is_set(), not abort.is_set()
                with _engine_errors(), contextlib.suppress(docker.errors.APIError):
                    container.kill()
                exited.wait(KILL_GRACE_SECONDS)
                break
        with _engine_errors():
            container.reload()
        state = container.attrs.get("State") or {}
        return RunResult(
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            timed_out=timed_out,
            aborted=aborted,
        )

    def remove_image(self, image_id: str) -> None:
        """Remove a built image: the commit of the build's label step, this job's alone."""
        with _engine_errors(), contextlib.suppress(docker.errors.ImageNotFound):
            # noprune: the parent layers are the build cache, which another job's build
            # may be using at this very moment.
            self._client.images.remove(image_id, force=True, noprune=True)

    def remove_containers(self, job_id: str) -> None:
        """Remove this worker's containers of a job (never another worker's)."""
        labels = [f"{JOB_LABEL}={job_id}", f"{WORKER_LABEL}={self._owner}"]
        with _engine_errors():
            for container in self._client.containers.list(
                all=True, filters={"label": labels}, sparse=True
            ):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)

    def managed_containers(self) -> list[ManagedContainer]:
        # sparse: no inspect per container, which fails if another worker removes it meanwhile
        with _engine_errors():
            containers = self._client.containers.list(
                all=True, filters=_MANAGED_FILTER, sparse=True
            )
        labels = [(str(c.id), c.attrs.get("Labels") or {}) for c in containers]
        return [
            ManagedContainer(
                id=id_, job_id=str(tags.get(JOB_LABEL, "")), worker=str(tags.get(WORKER_LABEL, ""))
            )
            for id_, tags in labels
        ]

    def managed_images(self) -> set[str]:
        """Jobs that have images proctor built on this engine."""
        with _engine_errors():
            images = self._client.images.list(filters=_MANAGED_FILTER)
        return {str(i.labels.get(JOB_LABEL)) for i in images} - {"None"}

    def remove_container(self, container_id: str) -> None:
        with _engine_errors(), contextlib.suppress(docker.errors.NotFound):
            self._client.containers.get(container_id).remove(force=True)

    def remove_job_images(self, job_id: str) -> None:
        with _engine_errors():
            # all: an image the build committed but no tag names is hidden from a plain list
            labelled = self._client.images.list(
                all=True, filters={"label": f"{JOB_LABEL}={job_id}"}
            )
            for image in labelled:
                with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                    self._client.images.remove(str(image.id), force=True)


_SOCKET_POOL_KEY = "http+docker://localhost"


class _SocketAdapter(UnixHTTPAdapter):
    """docker-py's adapter for the engine's Unix socket, with one connection pool.

    docker-py keys its pools by the whole URL, so every call about a new container or
    image (most of a job's calls) opened a new connection to the engine, and each pool
    past the 25th closed an older one. The socket is the same for every URL; one pool
    serves them all.
    """

    def get_connection(self, url: str | bytes, proxies: Mapping[str, str] | None = None) -> Any:
        return super().get_connection(_SOCKET_POOL_KEY, proxies)


def _share_socket_connections(client: docker.DockerClient) -> None:
    """Give a client on a Unix socket one connection pool (see `_SocketAdapter`)."""
    api = client.api
    current = api.get_adapter(_SOCKET_POOL_KEY)
    if not isinstance(current, UnixHTTPAdapter) or isinstance(current, _SocketAdapter):
        return  # TCP, SSH or a named pipe: requests already pools by host
    api.mount(
        "http+docker://",
        _SocketAdapter(current.socket_path, api.timeout, max_pool_size=current.max_pool_size),
    )
    current.close()
    # Proxies and .netrc mean nothing on a socket; looking them up costs every call.
    api.trust_env = False


def _container_options(
    job_id: str, profile: SandboxProfile, output_dir: Path, dataset_dir: Path | None
) -> dict[str, Any]:
    volumes = {str(output_dir): {"bind": OUTPUT_MOUNT, "mode": "rw"}}
    if dataset_dir is not None:
        volumes[str(dataset_dir)] = {"bind": DATASET_MOUNT, "mode": "ro"}
    return {
        "detach": True,
        "labels": job_labels(job_id),
        "network_mode": profile.network,
        "read_only": profile.read_only_rootfs,
        "user": profile.user,
        "cap_drop": list(profile.cap_drop),
        "security_opt": ["no-new-privileges:true"],
        "mem_limit": profile.memory_bytes,
        "memswap_limit": profile.memory_swap_bytes,
        "nano_cpus": int(profile.cpus * NANO_CPUS_PER_CPU),
        "pids_limit": profile.pids_limit,
        "ulimits": [
            Ulimit(name="nofile", soft=profile.nofile_limit, hard=profile.nofile_limit),
            Ulimit(
                name="fsize",
                soft=profile.file_size_limit_bytes,
                hard=profile.file_size_limit_bytes,
            ),
        ],
        "tmpfs": {TMP_MOUNT: f"rw,nosuid,nodev,size={profile.tmp_size_bytes}"},
        "volumes": volumes,
        # The engine's own copy of the output is capped too, so a flood cannot fill its disk;
        # above proctor's cap (JSON framing costs bytes), so proctor sees where to cut.
        "log_config": LogConfig(
            type=LOG_DRIVER,
            config={
                "max-size": str(ENGINE_LOG_FACTOR * profile.log_max_bytes + ENGINE_LOG_SLACK_BYTES),
                "max-file": "2",
            },
        ),
        "environment": {"HOME": "/tmp"},
        "shm_size": profile.shm_size_bytes,
        **({"runtime": profile.runtime} if profile.runtime else {}),
        **({"userns_mode": profile.userns_mode} if profile.userns_mode else {}),
        **(
            {"device_requests": [DeviceRequest(count=profile.gpus, capabilities=[["gpu"]])]}
            if profile.gpus
            else {}
        ),
        "stdin_open": False,
        "tty": False,
    }


def _remove_quietly(container: Any) -> bool:
    """Remove a container; False when that failed (the error is not the job's)."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        return True
    except (docker.errors.DockerException, requests.RequestException):
        return False
    return True


def _pump_logs(container: Any, on_log: LogSink) -> None:
    with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            on_log(chunk.decode("utf-8", errors="replace"))


def _json_lines(response: requests.Response) -> Iterator[dict[str, Any]]:
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)


class _Stopper:
    """Cuts a build's HTTP stream, which makes the engine abandon the build."""

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        self.finished = threading.Event()
        self.fired = False
        self.reason = ""

    def when(self, abort: threading.Event, deadline: float) -> None:
        while not self.finished.wait(WAIT_POLL_SECONDS):
            if abort.is_set() or time.monotonic() >= deadline:
                self.reason = "cancelled" if abort.is_set() else "time limit reached"
                self.fired = True
                self._cut()
                return

    def _cut(self) -> None:
        raw = getattr(getattr(getattr(self._response.raw, "_fp", None), "fp", None), "raw", None)
        sock = getattr(raw, "_sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._response.close()


@contextlib.contextmanager
def _engine_errors() -> Iterator[None]:
    """Map docker-py and transport errors to proctor's engine errors."""
    try:
        yield
    except (requests.ConnectionError, docker.errors.DockerException) as exc:
        if isinstance(exc, docker.errors.APIError) and exc.response is not None:
            raise exceptions.EngineError(f"the Docker engine failed: {exc.explanation}") from exc
        raise exceptions.EngineUnavailable(f"the Docker engine is unreachable: {exc}") from exc
