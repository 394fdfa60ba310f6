"""``pifr serve``: an HTTP access-control service on a gallery (FastAPI + uvicorn).

    from pifr.service import ServiceConfig, create_app
    app = create_app(ServiceConfig(gallery="staff.gallery", api_keys=parse_keys("admin:K1,recognize:K2")))

Needs the ``serve`` extra (``pip install -e ".[serve]"``). Modules: :mod:`.config` (settings and
API keys), :mod:`.auth`, :mod:`.store` (the gallery file, or PostgreSQL), :mod:`.recognizer`
(models and the decision), :mod:`.pool` (the bounded worker pool), :mod:`.audit`, :mod:`.metrics`,
:mod:`.app` (the FastAPI app), :mod:`.server` (``pifr serve``). ``docs/service.md`` is the manual.
"""
from __future__ import annotations

from .config import ServiceConfig, parse_keys

__all__ = ["ServiceConfig", "parse_keys", "create_app"]


def create_app(config: ServiceConfig, **kwargs):  # noqa: ANN201 - fastapi is imported lazily
    """The FastAPI app for ``config`` (see :func:`pifr.service.app.create_app`)."""
    from .app import create_app as _create

    return _create(config, **kwargs)
