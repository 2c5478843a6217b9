"""The baseline: the same job done straight through the Docker Engine API (docker-py),
with the sandbox proctor applies and nothing else: build without network, run
locked down, read the score back, remove container and image."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from proctor import engine, scratch
from proctor.config import Settings
from proctor.sandbox import SandboxProfile

RAW_LABEL = "proctor.bench"  # not proctor's own labels: no worker's sweep ever sees these
RUN_TIMEOUT_SECONDS = 60
BUILD_TRIES = 3


def context_tar(dockerfile: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = dockerfile.encode()
        member = tarfile.TarInfo("Dockerfile")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


class RawRunner:
    """Runs trivial jobs on the engine the way proctor's sandbox does, minus proctor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = docker.from_env(timeout=engine.ENGINE_TIMEOUT_SECONDS)
        self._count = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def run(self, dockerfile: str) -> float:
        """One job, start to score; returns the score read from /data/perf.json."""
        with self._lock:
            self._count += 1
            name = f"raw-{self._count}-{time.monotonic_ns()}"
        labels = {RAW_LABEL: name}
        image = self._build(dockerfile, labels)
        image_id = str(image.id)
        try:
            user = str((image.attrs.get("Config") or {}).get("User") or "")
            profile = SandboxProfile.for_job(
                self.settings, image_user=user, timeout=RUN_TIMEOUT_SECONDS
            )
            with tempfile.TemporaryDirectory(prefix="proctor-bench-raw-") as tmp:
                output = Path(tmp) / "data"
                with scratch.output_dir(
                    output, max_bytes=profile.output_max_bytes, capped=profile.output_capped
                ):
                    options = engine._container_options(name, profile, output, None)
                    options["labels"] = labels
                    container = self.client.containers.create(image_id, **options)
                    try:
                        container.start()
                        status = container.wait(timeout=RUN_TIMEOUT_SECONDS)
                        if status.get("StatusCode") != 0:
                            raise RuntimeError(f"raw job exited {status}")
                        score = json.loads((output / "perf.json").read_bytes())
                    finally:
                        container.remove(force=True)
        finally:
            self.client.images.remove(image_id, force=True, noprune=True)
        return float(score["perf"])

    def _build(self, dockerfile: str, labels: dict[str, str]) -> Any:
        for attempt in range(BUILD_TRIES):
            try:
                image, _ = self.client.images.build(
                    fileobj=io.BytesIO(context_tar(dockerfile)),
                    custom_context=True,
                    rm=True,
                    forcerm=True,
                    pull=False,
                    network_mode="none",
                    container_limits={
                        "memory": self.settings.build_memory,
                        "memswap": self.settings.build_memory,
                    },
                    labels=labels,
                )
                return image
            except docker.errors.BuildError as exc:
                # A cached layer removed by another build on this shared engine mid-build.
                if "unable to find image" not in str(exc) or attempt == BUILD_TRIES - 1:
                    raise
        raise AssertionError("unreachable")
