"""The project's emulator for benchmarks: a subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
import sys


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    """Start `refactor-mcp emulator --port 0`; return the process (terminate it when done) and its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "refactor_mcp", "emulator", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()
