"""The package's shape: no import circles (type-only imports included), the HTTP server without the `check`
command, and every third-party package the code imports declared in pyproject.toml."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "refactor_mcp"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> tuple[set[str], set[str]]:
    """What a module imports anywhere in it (in functions and under TYPE_CHECKING too): modules of this package,
    and the dotted names of everything else."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{base}.{node.module}" if node.module else base
            # `from . import x` imports the submodule x when there is one, else a name of the package.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # the names too: `from opentelemetry import trace` is a submodule
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            (ours if name.split(".")[0] == "refactor_mcp" else theirs).add(name)
    return ours, theirs


def _edges(module: str) -> set[str]:
    """The modules of this package that importing `module` runs: each import and the packages above it, but for
    the packages `module` itself is in (already being imported) and the root (its __init__ imports only leaves)."""
    own = {module.rsplit(".", depth)[0] for depth in range(module.count(".") + 1)}
    targets = set()
    for name in _imports(module)[0]:
        parts = name.split(".")
        for depth in range(2, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if prefix in MODULES and prefix not in own:
                targets.add(prefix)
    return targets


def test_the_package_has_no_import_circles() -> None:
    graph = {module: _edges(module) for module in MODULES}
    circles = []
    for start in graph:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen = set()
        while stack:
            module, path = stack.pop()
            for target in graph[module]:
                if target == start:
                    circles.append(" -> ".join([*path, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert not circles, circles


def test_the_http_server_does_not_load_the_check_command() -> None:
    code = "import sys, refactor_mcp.server.http; print(sorted(m for m in sys.modules if m.startswith('refactor_mcp')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "refactor_mcp.server.build" in loaded
    assert "'refactor_mcp.check'" not in loaded
    assert "'refactor_mcp.cli'" not in loaded


def _origin(module: str) -> Path:
    """The file that defines `module`, or the nearest module above it that has one (`a.b.name` -> a/b.py)."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:depth]))
        except ModuleNotFoundError:  # a name inside a module, not a submodule
            continue
        if spec is not None and spec.origin is not None:
            return Path(spec.origin).resolve()
    raise AssertionError(f"{module} cannot be found")


def _distribution_of(module: str, providers: dict[str, list[str]]) -> str:
    """The installed distribution that provides `module` (namespace packages such as opentelemetry span several)."""
    candidates = sorted(set(providers.get(module.split(".")[0], [])))
    if len(candidates) == 1:
        return candidates[0]
    origin = _origin(module)
    for name in candidates:
        found = distribution(name)
        if any(Path(found.locate_file(file)).resolve() == origin for file in found.files or []):
            return name
    raise AssertionError(f"no installed distribution provides {module}")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    declared = {_normalized(re.match(r"[A-Za-z0-9._-]+", requirement).group()) for requirement in requirements}  # type: ignore[union-attr]
    imported = {
        name
        for module in MODULES
        for name in _imports(module)[1]
        if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"
    }
    providers = packages_distributions()
    distributions = {name: _normalized(_distribution_of(name, providers)) for name in imported}
    undeclared = {found: name for name, found in sorted(distributions.items()) if found not in declared}
    assert not undeclared, undeclared
