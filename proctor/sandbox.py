"""The sandbox a job runs in: every limit and flag, as one value recorded on the job."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from proctor.config import Settings

NANO_CPUS_PER_CPU = 1_000_000_000
ROOT_USERS = frozenset({"", "root", "0"})
OUTPUT_MOUNT = "/data"
DATASET_MOUNT = "/data/input"
TMP_MOUNT = "/tmp"
LOG_DRIVER = "json-file"


@dataclass(frozen=True)
class SandboxProfile:
    """What the container is allowed; `record()` is what the job JSON shows as `sandbox`."""

    network: str
    read_only_rootfs: bool
    user: str
    cap_drop: tuple[str, ...]
    no_new_privileges: bool
    seccomp: str
    memory_bytes: int
    memory_swap_bytes: int
    cpus: float
    pids_limit: int
    nofile_limit: int
    file_size_limit_bytes: int
    tmp_size_bytes: int
    timeout_seconds: float
    log_max_bytes: int
    output_max_bytes: int
    output_capped: bool
    shm_size_bytes: int
    runtime: str
    userns_mode: str
    gpus: int | None

    @classmethod
    def for_job(
        cls, settings: Settings, *, image_user: str, timeout: float, gpus: int | None = None
    ) -> SandboxProfile:
        return cls(
            network="none",
            read_only_rootfs=True,
            user=run_user(image_user, settings.run_user),
            cap_drop=("ALL",),
            no_new_privileges=True,
            seccomp="default",
            memory_bytes=settings.run_memory,
            # Swap equal to memory: the job gets no swap beyond its memory limit.
            memory_swap_bytes=settings.run_memory,
            cpus=settings.run_cpus,
            pids_limit=settings.run_pids,
            nofile_limit=settings.run_nofile,
            file_size_limit_bytes=min(settings.run_file_size_max, settings.output_max_bytes),
            tmp_size_bytes=settings.run_tmp_size,
            timeout_seconds=timeout,
            log_max_bytes=settings.log_max_bytes,
            output_max_bytes=settings.output_max_bytes,
            output_capped=settings.output_cap,
            shm_size_bytes=settings.run_shm_size,
            runtime=settings.run_runtime,
            userns_mode=settings.run_userns_mode,
            gpus=gpus,
        )

    def record(self) -> dict[str, object]:
        record = asdict(self)
        record["cap_drop"] = list(self.cap_drop)
        return record


def run_user(image_user: str, fallback: str) -> str:
    """The image's own USER unless it is root, else the unprivileged fallback uid."""
    name = image_user.split(":", 1)[0].strip()
    return fallback if name in ROOT_USERS else image_user
