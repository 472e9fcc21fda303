"""``/docs`` and ``/redoc`` work without internet access: every asset they load is served by
the gateway itself, from a package, and is real JavaScript / CSS."""

from __future__ import annotations

import re

import httpx
import pytest

ASSET = re.compile(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""")


def referenced_urls(html: str) -> list[str]:
    return ASSET.findall(html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_reference_only_local_assets(client: httpx.AsyncClient, page: str) -> None:
    r = await client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = referenced_urls(r.text)
    assert urls, r.text
    external = [u for u in urls if not u.startswith("/")]
    assert external == [], external
    assert "cdn" not in r.text.lower() and "https://" not in r.text
    kinds = {}
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        kinds[url] = asset.headers["content-type"]
    if page == "/docs":
        assert kinds["/openapi.json"].startswith("application/json")
        assert kinds["/docs/assets/swagger-ui-bundle.js"].startswith(
            ("text/javascript", "application/javascript")
        )
        assert kinds["/docs/assets/swagger-ui.css"].startswith("text/css")
        assert kinds["/docs/assets/favicon.png"] == "image/png"


async def test_swagger_ui_is_version_5(client: httpx.AsyncClient) -> None:
    """Swagger UI 4 cannot render the OpenAPI 3.1 document FastAPI writes (a blank error)."""
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
    bundle = (await client.get("/docs/assets/swagger-ui-bundle.js")).text
    assert re.search(r'"5\.\d+\.\d+"', bundle) and len(bundle) > 500_000


async def test_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "https://" not in r.text
