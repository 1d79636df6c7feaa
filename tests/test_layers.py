"""The import rules of services/, read from the source with `ast` (nothing is imported).

- A service package (rooms, stream, avatar, token, voice: one that runs) imports no
  other service's package; shared libraries (common, speech, llm, markers) import none at all.
- Domain modules (every `domain.py`, the domain errors of services/common/errors.py, and
  services/speech, services/markers, services/llm) reach neither grpc (nor grpc_status, nor
  the google.rpc messages of a status) nor sqlalchemy, directly or through the modules of
  services/ they import. services/common/status.py alone maps domain errors to statuses.
- The modules of services/common import each other without a cycle.
- A service's use cases (`service.py`) import neither grpc nor generated protobuf code, and a
  servicer reaches SQL only through them: it imports no repository and no sqlalchemy.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
LIBRARIES = {"common", "speech", "llm", "markers"}
DOMAIN_LIBRARIES = {"speech", "markers", "llm"}
DOMAIN_ERRORS = "services.common.errors"
FORBIDDEN_IN_DOMAIN = ("grpc", "sqlalchemy")
FORBIDDEN_PREFIXES_IN_DOMAIN = ("grpc_", "google.rpc")

# Domain modules that still reach grpc, and why. Each entry names the module and the first
# module of services/ on its way to the forbidden import.
DOMAIN_ALLOWED: set[tuple[str, str]] = set()
# Import edges among services/common modules that close a cycle, and why.
COMMON_CYCLE_ALLOWED = {
    # open_bus() picks the back end at run time and imports the Redis bus only when
    # ARCONV_REDIS_URL is set, so the in-process bus needs no redis package.
    ("services.common.bus", "services.common.redis_bus"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVICES_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SERVICES_DIR.rglob("*.py"))}


MODULES = _modules()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, ast.Import | ast.ImportFrom):
                        lines.add(sub.lineno)
    return lines


@cache
def imports_of(module: str) -> tuple[str, ...]:
    """Every module `module` imports (at any depth of its code), names resolved to modules."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(target)
            # `from pkg import name` imports the module pkg.name when there is one.
            found += [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return tuple(found)


def _local(module: str) -> Iterator[str]:
    """The modules of services/ that importing `module` runs: it and its parent packages."""
    parts = module.split(".")
    for i in range(2, len(parts) + 1):
        name = ".".join(parts[:i])
        if name in MODULES:
            yield name


def _owner(module: str) -> str:
    """The top package under services/ ("rooms", "common", ...), or "" for services/*.py."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and MODULES[module].name == "__init__.py"):
        return parts[1]
    return ""


def _service_packages() -> set[str]:
    """Packages that run as a process (`python -m services.<name>`)."""
    return {d.name for d in SERVICES_DIR.iterdir() if (d / "__main__.py").exists()}


SERVICES = _service_packages()


def test_the_service_packages_are_the_known_ones() -> None:
    assert {"rooms", "stream", "avatar", "token", "voice"} <= SERVICES
    assert not SERVICES & LIBRARIES


def test_no_service_imports_another_service_and_no_library_imports_a_service() -> None:
    bad = []
    for module in MODULES:
        owner = _owner(module)
        if owner not in SERVICES | LIBRARIES:
            continue  # services/mesh.py, cli.py, edge.py start and wire everything
        for imported in imports_of(module):
            parts = imported.split(".")
            if parts[:1] == ["services"] and len(parts) > 1 and parts[1] in SERVICES - {owner}:
                bad.append(f"{module} imports {imported}")
    assert bad == []


def _domain_modules() -> list[str]:
    return sorted(
        m
        for m, path in MODULES.items()
        if path.name == "domain.py" or _owner(m) in DOMAIN_LIBRARIES or m == DOMAIN_ERRORS
    )


def _forbidden_in_domain(imported: str) -> bool:
    return (
        imported.split(".")[0] in FORBIDDEN_IN_DOMAIN
        or imported.startswith(FORBIDDEN_PREFIXES_IN_DOMAIN)
        or imported.endswith("_pb2_grpc")
    )


def _forbidden_path(module: str) -> list[str] | None:
    """The chain of imports from `module` to grpc, google.rpc or sqlalchemy, or None."""
    seen = {module}
    stack: list[list[str]] = [[module]]
    while stack:
        chain = stack.pop()
        for imported in imports_of(chain[-1]):
            if _forbidden_in_domain(imported):
                return [*chain, imported]
            for local in _local(imported):
                if local not in seen:
                    seen.add(local)
                    stack.append([*chain, local])
    return None


def test_domain_modules_reach_neither_grpc_nor_sqlalchemy() -> None:
    modules = _domain_modules()
    assert {"services.rooms.domain", "services.markers.parser", DOMAIN_ERRORS} <= set(modules)
    bad, allowed = [], set()
    for module in modules:
        chain = _forbidden_path(module)
        if chain is None:
            continue
        if (module, chain[1]) in DOMAIN_ALLOWED:
            allowed.add((module, chain[1]))
        else:
            bad.append(" -> ".join(chain))
    assert bad == []
    # An entry that no longer applies is removed from the list.
    assert allowed == DOMAIN_ALLOWED


def test_no_import_cycles_among_common_modules() -> None:
    common = {m for m in MODULES if _owner(m) == "common"}
    graph = {
        m: {
            t
            for imported in imports_of(m)
            for t in _local(imported)
            if t in common and t != m and (m, t) not in COMMON_CYCLE_ALLOWED
        }
        for m in common
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
    for src, dst in COMMON_CYCLE_ALLOWED:
        assert any(dst in _local(i) for i in imports_of(src)), (src, dst)


def _is_grpc(imported: str) -> bool:
    top = imported.split(".")[0]
    return top in ("grpc", "arconv") or top.startswith("grpc_") or imported.endswith("_pb2")


def test_use_cases_know_no_grpc_and_servicers_no_sql() -> None:
    uses = sorted(m for m, path in MODULES.items() if path.name == "service.py")
    servicers = sorted(m for m, path in MODULES.items() if path.name == "servicer.py")
    assert {f"services.{s}.service" for s in ("rooms", "token", "avatar")} <= set(uses)
    assert {f"services.{s}.servicer" for s in ("rooms", "token", "avatar")} <= set(servicers)
    bad = [f"{m} imports {i}" for m in uses for i in imports_of(m) if _is_grpc(i)]
    bad += [
        f"{m} imports {i}"
        for m in servicers
        for i in imports_of(m)
        if i.split(".")[0] == "sqlalchemy" or i.rpartition(".")[2] == "repository"
    ]
    assert bad == []


def test_the_rules_see_a_violation() -> None:
    """The walk resolves relative and `from pkg import module` imports to modules."""
    assert "services.common.errors" in imports_of("services.rooms.domain")
    assert _forbidden_path("services.rooms.domain") is None
    assert _forbidden_path("services.markers.parser") is None
    assert _forbidden_path("services.common.status") == ["services.common.status", "grpc"]
    # Through the modules of services/ a module imports: the stream's events (not a domain
    # module) carry a status code, so they reach grpc through services.common.status.
    chain = _forbidden_path("services.stream.events")
    assert chain is not None and len(chain) > 2, chain
    for name in ("grpc", "grpc_status.rpc_status", "google.rpc.error_details_pb2", "sqlalchemy"):
        assert _forbidden_in_domain(name), name
    assert not _forbidden_in_domain("google.protobuf.duration_pb2")
    assert "services.markers.parser" in set(_local("services.markers.parser"))
    assert any(_is_grpc(i) for i in imports_of("services.avatar.servicer"))
