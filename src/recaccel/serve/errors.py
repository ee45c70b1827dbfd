"""Errors a client caused or must react to, each with the HTTP status it is answered with.

Routes never build error responses by hand: they raise one of these and the app's handler
answers `{"error": message}` (the Open Inference Protocol's error body) with the status, plus
`Retry-After` where set, and a refusal's `reason` code beside `error`. Anything else that
escapes a route is a bug, answered 500 and logged.
"""

from __future__ import annotations

from recaccel.errors import RecaccelError


class RequestError(RecaccelError):
    """A request the server will not serve, and why; `status` is its HTTP status code."""

    status = 400

    def __init__(self, message: str, hint: str = "", *, status: int | None = None) -> None:
        super().__init__(message, hint)
        if status is not None:
            self.status = status


class NotFoundError(RequestError):
    """An unknown model, version, user or item."""

    status = 404


class PayloadTooLargeError(RequestError):
    status = 413


class OverloadedError(RequestError):
    """Admission control refused the request: it would miss its deadline if queued. `code`
    names the rule that refused it (admission.py), answered as the body's `reason`."""

    status = 429

    def __init__(self, message: str, retry_after_s: float, *, code: str, status: int = 429) -> None:
        super().__init__(message, "retry after the delay in Retry-After", status=status)
        self.retry_after_s = retry_after_s
        self.code = code


class UnavailableError(RequestError):
    """The server is draining, or the model is not ready."""

    status = 503


class DrainingError(UnavailableError):
    """The server, or this version of a model, is shutting down and takes no new requests:
    answered 503 with reason `draining`, so a client or balancer sends it to another replica."""

    code = "draining"


class FeatureStoreError(UnavailableError):
    """The feature store failed this request: down, slower than the request's budget, or
    holding a value the schema cannot read. Answered 503 with reason `feature_store` and a
    Retry-After, so a client or balancer retries elsewhere or later; never a hang or a 500."""

    code = "feature_store"

    def __init__(self, message: str, hint: str = "", *, retry_after_s: float = 1.0) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s
