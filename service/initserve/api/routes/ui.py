"""``GET /ui``: the diagnosis page, and the chart library it uses, served from the installed package.

The page is static (HTML, CSS, JS in ``initserve/api/ui``) and talks to the JSON API; Plotly's
browser bundle comes from the ``plotly`` Python package (its ``package_data/plotly.min.js``), so the
page works offline and nothing third-party is copied into this repository.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, HTMLResponse, Response

from initserve.api.json_body import UniqueKeysRoute
from initserve.api.problems import ProblemError

router = APIRouter(tags=["ui"], route_class=UniqueKeysRoute)

ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
ASSET_CACHE = "public, max-age=300"


def _asset(name: str) -> bytes:
    return resources.files("initserve.api.ui").joinpath(name).read_bytes()


def plotly_bundle() -> Path | None:
    """Path of ``plotly.min.js`` inside the installed ``plotly`` package (not imported), or None."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The diagnosis page: architectures × schemes, predicted vs measured, and a scheme explorer."""
    return HTMLResponse(_asset("index.html"), headers={"Cache-Control": ASSET_CACHE})


@router.get("/ui/assets/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name == "plotly.min.js":
        bundle = plotly_bundle()
        if bundle is None:
            msg = "the page's charts need the plotly package: pip install 'initserve[server]'"
            raise ProblemError(404, "not-found", msg, errors=[(("path", "name"), msg)])
        return FileResponse(bundle, media_type=ASSETS["app.js"], headers={"Cache-Control": "public, max-age=86400"})
    if name not in ASSETS:
        msg = f"no asset {name!r}; known: {', '.join([*ASSETS, 'plotly.min.js'])}"
        raise ProblemError(404, "not-found", msg, errors=[(("path", "name"), msg)])
    return Response(_asset(name), media_type=ASSETS[name], headers={"Cache-Control": ASSET_CACHE})
