"""Tunable knobs of the dashboard, as one dataclass.

Defaults suit one operator with a browser tab or two open on a laptop; they bound
the memory a slow or stuck client can pin on the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DashboardConfigError

MIN_TOKEN_LENGTH = 16
"""Shorter tokens can be guessed over loopback in reasonable time."""


@dataclass(frozen=True)
class DashboardConfig:
    """How the web layer behaves; all fields have safe defaults."""

    keepalive_s: float = 15.0
    """Seconds between SSE comment lines, so proxies and browsers keep the stream open."""

    client_buffer_events: int = 256
    """Events held per SSE client before the oldest are dropped (the client then resyncs)."""

    cookie_name: str | None = None
    """Name of the HttpOnly cookie that authorises the page's own fetches.

    ``None`` (the default) derives a name from the token (``auth.cookie_name``), so
    daemons on one host, each with its own token, do not overwrite each other's cookie.
    """

    rounds_limit: int = 200
    """Most rounds ``/api/rounds`` returns when the caller does not ask for fewer."""

    def __post_init__(self) -> None:
        if not self.keepalive_s > 0:
            raise DashboardConfigError(f"keepalive_s must be > 0, got {self.keepalive_s!r}")
        if self.client_buffer_events < 1:
            raise DashboardConfigError(
                f"client_buffer_events must be >= 1, got {self.client_buffer_events!r}"
            )
        if self.cookie_name is not None and not (
            self.cookie_name and self.cookie_name.replace("_", "").isalnum()
        ):
            raise DashboardConfigError(
                f"cookie_name must be a non-empty alphanumeric/underscore name, "
                f"got {self.cookie_name!r}"
            )
        if self.rounds_limit < 1:
            raise DashboardConfigError(f"rounds_limit must be >= 1, got {self.rounds_limit!r}")
