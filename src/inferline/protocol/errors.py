"""Errors every layer raises, each carrying the HTTP status that the REST adapter answers with.

The gRPC adapters map the same statuses to gRPC codes (`grpc_code_name`), so one exception
class means the same thing on both transports.
"""

# HTTP status -> gRPC status code name, as MLServer and Triton map them.
GRPC_CODE_NAMES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    422: "FAILED_PRECONDITION",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class InferlineError(Exception):
    """Base class: a problem with the caller's request, answered with `status`."""

    status = 400
    # The gRPC status code's name when it is not the one `status` maps to.
    grpc_code: str | None = None

    def __init__(self, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.message = message
        # Response headers (gRPC: initial metadata) that go out with the error.
        self.headers = headers or []


class BadRequest(InferlineError):
    """Malformed body, wrong shape or datatype, unknown output: the caller must fix the request."""

    status = 400


class InferenceError(InferlineError):
    """The model itself rejected or failed on a request (its message is passed on)."""

    status = 400


class ModelNotFound(InferlineError):
    status = 404

    def __init__(self, name: str, version: str | None = None, detail: str = ""):
        what = f"model '{name}'" if not version else f"model '{name}' version '{version}'"
        super().__init__(f"{what} not found" + (f" ({detail})" if detail else ""))
        self.name = name
        self.version = version


class PayloadTooLarge(InferlineError):
    status = 413


class InvalidModelURI(InferlineError):
    """The model's folder or URI cannot be read or holds no loadable model."""

    status = 422


class ModelLoadError(InferlineError):
    """The runtime failed to load a model whose files were found."""

    status = 400


class ModelNotReady(InferlineError):
    """The model exists but cannot answer now (loading, unloading, or failed to load)."""

    status = 503


def grpc_code_name(error: InferlineError) -> str:
    """The gRPC status code name an error goes out with (INTERNAL for our own bugs)."""
    return error.grpc_code or GRPC_CODE_NAMES.get(error.status, "INTERNAL")
