"""The release as people get it: what scripts/build_release.sh makes, the wheel installed with its dependencies
into a fresh venv away from the source tree, one version throughout, a current uv.lock, and valid workflows.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from refactor_mcp import __version__

from .support import API_KEY, Emulator

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
UV = shutil.which("uv", path=str(BIN))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ARTIFACTS = [
    f"refactor_mcp-{__version__}.tar.gz",
    f"refactor_mcp-{__version__}-py3-none-any.whl",
    f"refactor-mcp-{__version__}.mcpb",
]
needs_uv = pytest.mark.skipif(UV is None, reason="needs uv (the test extra)")


def run(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, f"{command} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if UV is None or shutil.which("npx") is None:
        pytest.skip("needs uv (the test extra) and npx (Node.js)")
    out = tmp_path_factory.mktemp("dist")
    run(
        [str(ROOT / "scripts" / "build_release.sh"), str(out)],
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    return out


def test_the_release_holds_the_sdist_the_wheel_the_bundle_and_their_sums(dist: Path) -> None:
    lines = (dist / "SHA256SUMS").read_text().splitlines()
    sums = {name: digest for digest, name in (line.split("  ", 1) for line in lines)}
    assert sums == {name: hashlib.sha256((dist / name).read_bytes()).hexdigest() for name in ARTIFACTS}


def test_the_wheel_installs_with_its_dependencies_and_runs_away_from_the_source_tree(
    dist: Path, api: Emulator, tmp_path: Path
) -> None:
    assert UV is not None
    venv = tmp_path / "venv"
    run([UV, "venv", "--quiet", "--python", sys.executable, str(venv)])
    # With dependencies, from the index (uv's cache makes a repeat fast): the wheel must install as published.
    # Compiled as pip compiles by default; the commands below then skip compiling on first import (~1-3 s).
    wheel = str(dist / ARTIFACTS[1])
    run([UV, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(venv), wheel])
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"REFACTOR_API_KEY": API_KEY, "REFACTOR_BASE_URL": api.url}
    bin_dir = venv / "bin"
    installed = run(
        [str(bin_dir / "python"), "-c", "import refactor_mcp; print(refactor_mcp.__file__)"], cwd=tmp_path, env=env
    )
    assert Path(installed.stdout.strip()).is_relative_to(venv), installed.stdout

    version = run([str(bin_dir / "refactor-mcp"), "--version"], cwd=tmp_path, env=env)
    assert version.stdout.strip() == f"refactor-mcp {__version__}"
    run([str(bin_dir / "refactor-mcp"), "demo"], cwd=tmp_path, env=env)
    run([str(bin_dir / "refactor-mcp"), "check"], cwd=tmp_path, env=env)
    assert api.requests(), "check did not reach the emulator"


@needs_uv
def test_the_lock_is_current() -> None:
    assert UV is not None
    done = subprocess.run([UV, "lock", "--check"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, (
        f"uv.lock does not match pyproject.toml: run `uv lock` and commit uv.lock\n{done.stderr}"
    )


def test_the_changelog_has_an_unreleased_section_and_one_for_this_version() -> None:
    headings = re.findall(r"^## (.*)$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == "[Unreleased]", headings
    assert any(re.fullmatch(rf"\[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}", h) for h in headings), headings


@pytest.mark.skipif(shutil.which("check-jsonschema", path=str(BIN)) is None, reason="needs check-jsonschema")
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_the_workflow_is_valid(workflow: Path) -> None:
    """Against the workflow schema check-jsonschema ships (offline): YAML syntax, keys, their types."""
    run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)])


def test_the_release_workflow_builds_with_the_script_and_publishes_with_trusted_publishing() -> None:
    workflow = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    for needed in ("scripts/build_release.sh", "uses: ./.github/workflows/ci.yml", "id-token: write"):
        assert needed in workflow, needed
    assert "pypa/gh-action-pypi-publish@" in workflow
    assert "password:" not in workflow, "trusted publishing needs no token"
    assert "dist/*.mcpb dist/SHA256SUMS" in workflow, "the bundle and the sums go to the GitHub release"
    assert ".ci/run" in (ROOT / ".github" / "workflows" / "ci.yml").read_text()
