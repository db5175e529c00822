"""Errors raised by the dashboard layer.

They are raised while the daemon *builds* the web application (bad configuration),
never while serving a request: a bad request gets an HTTP status, not an exception
that could reach the daemon's event loop.
"""

from __future__ import annotations


class WebUIError(Exception):
    """Base class for every error raised by ``fedswarm.webui``."""


class WeakTokenError(WebUIError, ValueError):
    """The API token is too short (or empty) to protect the dashboard.

    Subclasses ``ValueError`` because earlier callers caught that.
    """


class DashboardConfigError(WebUIError, ValueError):
    """A ``DashboardConfig`` field is out of its sensible range."""


class StaticAssetsMissingError(WebUIError):
    """The packaged HTML/JS/CSS files are not where the package says they are.

    Usually a broken install (package data not included in the wheel).
    """
