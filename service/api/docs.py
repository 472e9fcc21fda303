"""The API docs UI (``/docs``: Swagger UI, ``/redoc``: ReDoc) from assets shipped in a package.

FastAPI's own pages load their JavaScript and CSS from a public CDN, so on a machine without
internet access (regulated, air-gapped deployments) ``/docs`` is a blank page. The assets come
instead from ``fastapi-offline``'s package data (Swagger UI 5, which renders the OpenAPI 3.1
document FastAPI writes, and ReDoc), served by the gateway itself under ``ASSETS``; only its
static files are used, not its app factory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS: Final = "/docs/assets"
OAUTH2_REDIRECT: Final = "/docs/oauth2-redirect"


def asset_directory() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """``/docs``, its OAuth2 redirect, ``/redoc`` and their assets; build the app with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not registered."""
    app.mount(ASSETS, StaticFiles(directory=asset_directory()), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    for path, endpoint in [("/docs", swagger_ui), (OAUTH2_REDIRECT, oauth2_redirect)]:
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
