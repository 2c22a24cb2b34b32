"""The API explorer at ``/schema``, served whole by the gateway: it works without internet.

Litestar's explorer pages (Redoc at ``/schema`` and ``/schema/redoc``, Swagger UI at
``/schema/swagger``, Stoplight Elements at ``/schema/elements``, RapiDoc at
``/schema/rapidoc``) load their scripts, styles and fonts from public CDNs by default, and
inside a network without internet they stay blank. Here every page loads its files from
``/schema/assets/``, which serves the copies ``ops/setup-explorer`` vendored from npm at setup
time (versions and integrities pinned in ``ops/explorer/assets.lock``) into
``gateway/api/explorer/``; nothing is fetched at run time. Web fonts are switched off (Redoc's
Google Fonts link, RapiDoc's Open Sans): the pages use the system's fonts.

Where the files were not vendored (``ops/setup`` not run), each page says so and points to
the document itself (``/schema/openapi.json``) instead of staying blank.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml
from litestar import Request, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RapidocRenderPlugin,
    RedocRenderPlugin,
    StoplightRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.params import FromPath
from litestar.response import File

ASSET_DIR = Path(__file__).parent / "explorer"
ASSET_PATH = "/schema/assets"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'none'"
)
"""The pages may load from this gateway only (their own inline script starts the explorer).
Redoc's side menu links a logo on its makers' CDN: the policy keeps the browser from asking."""
HEAD = (
    f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\"><link rel='icon' href='data:,'>"
)
"""Put in each page's ``<head>`` (litestar's favicon slot, before any script): the policy, and
no icon (litestar's default is fetched from a CDN)."""


def asset_url(name: str) -> str:
    return f"{ASSET_PATH}/{name}"


def _missing(names: tuple[str, ...]) -> bytes | None:
    """A page saying which vendored files are missing, or None when all are there."""
    missing = [n for n in names if not (ASSET_DIR / n).is_file()]
    if not missing:
        return None
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>API explorer</title></head>"
        "<body><h1>The API explorer is not installed on this gateway</h1>"
        f"<p>Missing: {', '.join(missing)} (run <code>ops/setup</code>, which vendors them "
        "with <code>ops/setup-explorer</code>).</p>"
        "<p>The OpenAPI document itself: <a href='/schema/openapi.json'>/schema/openapi.json"
        "</a>.</p></body></html>"
    ).encode()


class RedocPage(RedocRenderPlugin):
    FILES = ("redoc.standalone.js",)

    def __init__(self) -> None:
        super().__init__(
            js_url=asset_url(self.FILES[0]),
            google_fonts=False,
            path=["/redoc"],
            favicon=HEAD,
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return _missing(self.FILES) or super().render(request, openapi_schema)


class SwaggerPage(SwaggerRenderPlugin):
    FILES = ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css")

    def __init__(self) -> None:
        super().__init__(
            js_url=asset_url(self.FILES[0]),
            standalone_preset_js_url=asset_url(self.FILES[1]),
            css_url=asset_url(self.FILES[2]),
            favicon=HEAD,
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return _missing(self.FILES) or super().render(request, openapi_schema)


class ElementsPage(StoplightRenderPlugin):
    FILES = ("elements-web-components.min.js", "elements-styles.min.css")

    def __init__(self) -> None:
        super().__init__(
            js_url=asset_url(self.FILES[0]), css_url=asset_url(self.FILES[1]), favicon=HEAD
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return _missing(self.FILES) or super().render(request, openapi_schema)


class RapidocPage(RapidocRenderPlugin):
    FILES = ("rapidoc-min.js",)

    def __init__(self) -> None:
        super().__init__(js_url=asset_url(self.FILES[0]), favicon=HEAD)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        # RapiDoc loads Open Sans from Google's font CDN unless told not to.
        page = super().render(request, openapi_schema)
        return _missing(self.FILES) or page.replace(b"<rapi-doc ", b'<rapi-doc load-fonts="false" ')


class YamlDocument(YamlRenderPlugin):
    """The document in YAML, from its JSON (whose examples are pre-encoded JSON, which
    litestar's own YAML rendering cannot read)."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        document = msgspec.json.decode(self.render_json(request, openapi_schema))
        text: str = yaml.dump(document, default_flow_style=False, sort_keys=False)
        return text.encode()


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """The explorer's pages (Redoc first: it answers ``/schema`` itself) and the document in
    JSON and YAML."""
    return [
        RedocPage(),
        SwaggerPage(),
        ElementsPage(),
        RapidocPage(),
        JsonRenderPlugin(),
        YamlDocument(),
    ]


@get(f"{ASSET_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def explorer_asset(name: FromPath[str]) -> File:
    """A vendored file of the explorer (a script, a stylesheet, a licence)."""
    media_type = _MEDIA_TYPES.get(Path(name).suffix)
    path = ASSET_DIR / name
    if not _NAME.match(name) or media_type is None or not path.is_file():
        raise NotFoundException(f"no explorer file {name}")
    return File(path, media_type=media_type, headers=_HEADERS, content_disposition_type="inline")


ROUTES = [explorer_asset]

__all__ = [
    "ASSET_DIR",
    "ASSET_PATH",
    "ROUTES",
    "ElementsPage",
    "RapidocPage",
    "RedocPage",
    "SwaggerPage",
    "YamlDocument",
    "render_plugins",
]
