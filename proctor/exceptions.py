"""proctor's exception tree: one root, one class per thing that can go wrong.

Each class carries the HTTP status and error code the API answers with, so the
edges (API, CLI) turn them into responses without knowing every case.
"""

from __future__ import annotations


class ProctorError(Exception):
    """proctor failed."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or self.code)

    @property
    def message(self) -> str:
        return str(self.args[0])


# --- Rejected submissions (the client sent something we will not take) -------------


class SubmissionError(ProctorError):
    """The submission was rejected."""

    status_code = 400
    code = "bad_request"


class UnreadableUpload(SubmissionError):
    """The upload could not be read."""

    status_code = 400
    code = "unreadable_upload"


class UploadTooLarge(SubmissionError):
    """The upload is larger than the server accepts."""

    status_code = 413
    code = "too_large"


class UnsupportedUpload(SubmissionError):
    """The upload is neither a Dockerfile nor a .tar/.tar.gz build context."""

    status_code = 415
    code = "unsupported_media_type"


class RejectedSubmission(SubmissionError):
    """The submission was rejected before the build."""

    status_code = 422
    code = "rejected"


class DockerfileSyntaxError(RejectedSubmission):
    """The Dockerfile does not parse."""

    code = "dockerfile_invalid"


class BaseImageNotAllowed(RejectedSubmission):
    """A base image of the Dockerfile is not on the allowlist."""

    code = "base_image_not_allowed"


class UnsafeArchive(RejectedSubmission):
    """The build context archive holds a member proctor will not unpack."""

    code = "unsafe_archive"


class InvalidParameter(RejectedSubmission):
    """A parameter of the submission is out of range."""

    code = "invalid_parameter"


class QuotaExceeded(SubmissionError):
    """The user has too many jobs waiting."""

    status_code = 429
    code = "too_many_requests"


class UnknownDataset(RejectedSubmission):
    """The submission names a dataset the server does not have."""

    code = "unknown_dataset"


# --- API-level errors -------------------------------------------------------------


class Unauthorized(ProctorError):
    """A valid bearer token is required."""

    status_code = 401
    code = "unauthorized"


class NotFound(ProctorError):
    """No such resource."""

    status_code = 404
    code = "not_found"


class Conflict(ProctorError):
    """The resource is not in a state that allows this."""

    status_code = 409
    code = "conflict"


class ServiceUnavailable(ProctorError):
    """A backing service (database or Docker engine) is unreachable."""

    status_code = 503
    code = "unavailable"


class DatasetMisconfigured(ServiceUnavailable):
    """A dataset's descriptor cannot be used: the operator must fix it."""

    code = "dataset_unavailable"


class InvalidConfiguration(ProctorError):
    """A setting is not usable."""


# --- Engine adapter errors (raised by proctor.engine, handled by the pipeline) ------


class EngineError(ProctorError):
    """The Docker engine failed."""


class EngineUnavailable(EngineError):
    """The Docker engine cannot be reached."""


class BuildError(EngineError):
    """The image did not build."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step


class BuildAborted(EngineError):
    """The build was stopped before it finished (time limit or cancel)."""


class SandboxUnavailable(ProctorError):
    """The sandbox cannot be set up on this worker."""


class ImageMissing(EngineError):
    """An image the build needs is not present on the engine."""


class CheckError(ProctorError):
    """A check of the built image could not complete."""


# --- Signed results --------------------------------------------------------------------


class InvalidSignature(ProctorError):
    """The result record does not verify against the public key."""

    status_code = 422
    code = "invalid_signature"


class NoResult(Conflict):
    """The job has no signed result: it has not succeeded."""

    code = "no_result"
