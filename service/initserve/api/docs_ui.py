"""``/docs`` (Swagger UI) and ``/redoc`` served with assets from an installed package, not a CDN.

FastAPI's own pages load Swagger UI from a CDN and are blank offline or behind a strict firewall.
The assets (Swagger UI 5, which renders OpenAPI 3.1, and ReDoc) come from the ``fastapi-offline``
package's ``static`` folder and are served under ``/docs/static``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

STATIC_PATH = "/docs/static"


def assets_dir() -> Path:
    """The installed Swagger UI / ReDoc assets."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Mount the assets and the two pages; the app must be built with ``docs_url=None, redoc_url=None``."""
    app.mount(STATIC_PATH, StaticFiles(directory=assets_dir()), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_PATH}/favicon.png",
        )

    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            redoc_js_url=f"{STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_PATH}/favicon.png",
            with_google_fonts=False,
        )

    app.add_api_route("/docs", swagger, include_in_schema=False, response_class=HTMLResponse)
    app.add_api_route("/redoc", redoc, include_in_schema=False, response_class=HTMLResponse)
