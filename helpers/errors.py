"""One exception base for the loop; each subclass says how to fix the problem."""
from __future__ import annotations


class EdgeLoopError(Exception):
    """Base of every error the helpers raise on purpose."""


class ConfigError(EdgeLoopError):
    """A setting is missing or invalid; the message names the variable to set."""


class BackendNotFound(ConfigError):
    """An unknown backend name was asked for; the message lists the valid ones."""


class MissingExtra(ConfigError):
    """An optional backend's SDK is not installed; the message names the extra."""


class ServiceError(EdgeLoopError):
    """A service answered with an error.

    Attributes:
        status: HTTP status code (0 when the service could not be reached).
        field: the request field the service blamed, when it named one.
    """

    def __init__(self, message: str, status: int = 0, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


class Unauthorized(ServiceError):
    """401: no or wrong credential."""


class Forbidden(ServiceError):
    """403: the credential is valid but not for this resource."""


class NotFound(ServiceError):
    """404: unknown device, sample, model or deployment."""


class Conflict(ServiceError):
    """409/412: an etag or version did not match, or the object already exists."""


class ServiceUnavailable(ServiceError):
    """The service could not be reached (transient: retry)."""


class InvalidManifest(EdgeLoopError):
    """A deployment manifest failed validation; `problems` lists each one."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid deployment manifest:\n  - " + "\n  - ".join(problems))
        self.problems = problems


class DatasetError(EdgeLoopError):
    """A dataset cannot be used as asked (empty, one image, a class with no boxes...)."""


class ModelError(EdgeLoopError):
    """A model cannot be loaded or does not match (labels, input size, hash)."""


class RolloutError(EdgeLoopError):
    """A rollout did not converge or a gate refused a model."""
