"""Routers are adapters, pages render from services: no module of app/pages imports a router of the API
(app.<package>.router), no router of the API imports a module of app/pages, and no router imports another
router (what two routers share is a service or a schema). A page that needs an
endpoint's rule calls the service that holds it (app.auth.accounts, app.submissions.intake, ...); a router
that needs a page's rendering means the route belongs beside its renderer. Read with ast
(tests/test_no_import_circles.py: imports inside functions included, `if TYPE_CHECKING:` left out)."""

from __future__ import annotations

from tests.test_no_import_circles import import_graph, product_sources

PAGES = "app.pages"


def _is_page(module: str) -> bool:
    return module == PAGES or module.startswith(PAGES + ".")


def _is_api_router(module: str) -> bool:
    """app.<package>.router, the pages' own router (app.pages.router) aside."""
    parts = module.split(".")
    return len(parts) == 3 and parts[0] == "app" and parts[2] == "router" and not _is_page(module)


def crossings(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every page importing an API router, every API router importing a page or another router."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if (_is_page(module) or _is_api_router(module)) and (_is_api_router(target) or _is_page(target)):
                if _is_page(module) and _is_page(target):
                    continue
                found.append(f"{module} -> {target}")
    return found


def test_the_checker_sees_both_directions() -> None:
    sources = {
        "app": "",
        "app.auth": "",
        "app.auth.router": "def f():\n    from app.pages import report\n",
        "app.auth.service": "",
        "app.admin": "",
        "app.admin.router": "from app.auth.router import f\n",
        "app.pages": "",
        "app.pages.report": "",
        "app.pages.router": "from app.pages import report\n",
        "app.pages.account": "from app.auth import router as auth_api\nfrom app.auth import service\n",
    }
    graph = import_graph(sources, {"app", "app.admin", "app.auth", "app.pages"})
    assert crossings(graph) == [
        "app.admin.router -> app.auth.router",
        "app.auth.router -> app.pages.report",
        "app.pages.account -> app.auth.router",
    ]


def test_no_page_imports_a_router_and_no_router_imports_a_page() -> None:
    sources, packages = product_sources()
    graph = import_graph(sources, packages)
    assert any(_is_api_router(m) for m in graph), "the checker would be vacuous: no router found"
    found = crossings(graph)
    assert found == [], "pages call services; routers import neither pages nor routers:\n" + "\n".join(found)
