"""The routes of the exhibit and classroom modes, gathered so the app module adds them in one line."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute

from apviz.server.block import block_routes
from apviz.server.cards import card_routes
from apviz.server.forget import forget_routes
from apviz.server.join import join_routes
from apviz.server.operator import operator_routes
from apviz.service import Service


def exhibit_routes(service: Service, web_dir: Path | str | None = None) -> list[BaseRoute]:
    """``POST /api/me/forget``, tracker blocking, the operator console, the join card's QR codes and
    the company cards."""
    return [
        *forget_routes(service),
        *block_routes(service),
        *operator_routes(service, web_dir),
        *join_routes(service),
        *card_routes(),
    ]
