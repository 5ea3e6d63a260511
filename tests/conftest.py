"""Shared fixtures (the emulator as a real loopback HTTP server) and the scheduling of parallel runs; what the tests
share besides fixtures is in support.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .support import API_KEY, Emulator


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so that a module's async fixtures may be too (a shared server's session outlives a test)."""
    return "asyncio"


# -- parallel runs (pytest-xdist, --dist loadgroup: see pyproject.toml) ------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep a module's tests on one worker when they share a fixture the module itself defines above function
    scope (a server, a provider, an npm install: made once, not once per worker), and start the longest first.

    Every other test goes to whichever worker is free. A test marked `slow(seconds)` pulls its group to the front,
    longest first, so the run is not left waiting on a long test that started last. xdist also queues a second
    unit on each worker at the start, in worker order: the one queued behind the longest unit waits for all of
    it, so that one is a single unmarked test, the shortest kind we can tell.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _uses_a_shared_fixture_of_its_module(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    seconds: dict[str, float] = {}
    tests: dict[str, int] = {}
    for item in items:
        unit = _unit(item)
        marker = item.get_closest_marker("slow")
        seconds[unit] = seconds.get(unit, 0.0) + (float(marker.args[0]) if marker else 0.0)
        tests[unit] = tests.get(unit, 0) + 1
    units = sorted(seconds, key=lambda unit: (-seconds[unit], -tests[unit]))  # stable: else in the order collected
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))  # set in each xdist worker, which sorts
    if 0 < workers < len(units):
        short = next((unit for unit in units[workers:] if tests[unit] == 1 and not seconds[unit]), None)
        if short is not None:
            units.remove(short)
            units.insert(workers, short)
    position = {unit: index for index, unit in enumerate(units)}
    items.sort(key=lambda item: position[_unit(item)])


def _uses_a_shared_fixture_of_its_module(item: pytest.Item) -> bool:
    module = item.nodeid.split("::")[0]
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else []
    return any(d.scope != "function" and d.baseid == module for ds in definitions for d in ds)


def _unit(item: pytest.Item) -> str:
    """What xdist schedules together: the test's group, or the test alone."""
    group = item.get_closest_marker("xdist_group")
    return str(group.args[0]) if group is not None else item.nodeid


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[Emulator]:
    process = subprocess.Popen(
        [sys.executable, "-m", "refactor_mcp", "emulator", "--port", "0", "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), f"emulator did not start: {url!r}"
    yield Emulator(url)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def api(emulator_process: Emulator) -> Emulator:
    """The emulator, with an empty request log."""
    emulator_process.reset()
    return emulator_process
