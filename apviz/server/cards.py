"""``GET /api/cards/{lang}``: the company cards of one language, for the kiosk's caption and ``/me``.

The cards are static data (:mod:`apviz.enrich.cards`), loaded once per app and sent whole (a few
tens of kilobytes): the pages then look a company up by the id the view carries on its node
(``company``) with no request per tap. Unknown languages get 404, never another language's text.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from apviz.enrich.cards import LANGUAGES, Cards


def card_routes(cards: Cards | None = None) -> list[BaseRoute]:
    loaded = cards if cards is not None else Cards()

    async def endpoint(request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang not in LANGUAGES:
            return JSONResponse({"error": "unknown language"}, status_code=404)
        return JSONResponse(
            {"lang": lang, "cards": loaded.language(lang)}, headers={"Cache-Control": "public, max-age=3600"}
        )

    return [Route("/api/cards/{lang}", endpoint, methods=["GET", "HEAD"])]
