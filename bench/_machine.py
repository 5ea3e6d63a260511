"""The line each benchmark prints first: the machine its figures come from, and how busy it was."""

import os
import platform


def machine(*also: str) -> str:
    """CPUs, model, kernel and Python, then `also` (versions of what the benchmark ran), then the load average."""
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    parts = [f"{os.cpu_count()} CPUs, {model}, Linux {platform.release()}", f"Python {platform.python_version()}"]
    return f"Machine: {'; '.join([*parts, *also, f'load average {load}'])}"
