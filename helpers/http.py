"""HTTP plumbing the local clients share: status code -> `helpers.errors` class, masked messages."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from helpers.config import mask
from helpers.errors import Conflict, Forbidden, NotFound, ServiceError, ServiceUnavailable, Unauthorized

_BY_STATUS: dict[int, type[ServiceError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 412: Conflict,
    502: ServiceUnavailable, 503: ServiceUnavailable, 504: ServiceUnavailable,
}
_HINTS = {
    401: "check the credential (connection string / API key) for this workspace",
    403: "use the service connection string, or the device's own connection string",
    412: "read the object again for its current etag",
}


def error_for(resp: requests.Response) -> ServiceError:
    """The `ServiceError` subclass for a non-2xx response, with the service's message and field."""
    field = None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("error") or body.get("Message") or body.get("message") or resp.reason
        if isinstance(message, dict):
            message = message.get("message", str(message))
        field = body.get("field")
    else:
        message = (resp.text or resp.reason or "")[:300]
    cls = _BY_STATUS.get(resp.status_code, ServiceError)
    hint = _HINTS.get(resp.status_code)
    path = requests.utils.urlparse(resp.url).path if resp.url else ""
    text = f"{resp.request.method if resp.request else ''} {path}: HTTP {resp.status_code}: {message}"
    if hint and hint not in str(message):
        text += f" ({hint})"
    return cls(mask(text), resp.status_code, field)


def raise_for_status(resp: requests.Response) -> requests.Response:
    """Return `resp` when 2xx, else raise the mapped error."""
    if 200 <= resp.status_code < 300:
        return resp
    raise error_for(resp)


def call(session: requests.Session, method: str, url: str, *, headers: Callable[[], dict[str, str]],
         timeout: float, on_unreachable: Callable[[], str | None] | None = None, **kw: Any) -> requests.Response:
    """One request with fresh auth headers; connection failures become `ServiceUnavailable`.

    Args:
        on_unreachable: called once when the service cannot be reached; may return a new base
            URL prefix to retry against (the local cloud restarted on another port), else None.
    """
    extra = kw.pop("extra_headers", None) or {}
    for attempt in (0, 1):
        try:
            resp = session.request(method, url, headers={**headers(), **extra}, timeout=timeout, **kw)
        except (requests.ConnectionError, requests.Timeout) as exc:
            retry = on_unreachable() if (on_unreachable and attempt == 0) else None
            if retry:
                url = retry + url[url.index("/", url.index("//") + 2):]
                continue
            raise ServiceUnavailable(
                mask(f"{method} {url.split('?')[0]}: the service cannot be reached ({type(exc).__name__}); "
                     "is the local cloud running? `python -m helpers.localcloud start --workspace ...`"), 0
            ) from None
        return raise_for_status(resp)
    raise AssertionError("unreachable")
