"""refactor-mcp against the minimal SDK server over stdio, both driven by the official Python client.

    .venv/bin/python bench/stdio_client.py [--rounds 9] [--calls 300] [--checks 2000]
    .venv/bin/python bench/stdio_client.py --profile FILE [--profile-system minimal]   # py-spy on one server

bench/perf.py speaks raw JSON-RPC, so the client costs the same for every server. Here the client is the one users
run: ClientSession over stdio_client, `list_tools` first, so `call_tool` checks each result's structuredContent
against the tool's outputSchema (the SDK compiles a jsonschema validator per tool once and runs
`best_match(iter_errors(...))` on every result). The minimal server declares no outputSchema, so its results are not
checked: what ours costs the client is in the ratio.

Systems, each a stdio server spawned by the SDK's stdio_client, both open for the whole run, against one emulator
(`refactor-mcp emulator`) on 127.0.0.1:
- refactor-mcp: the console script `refactor-mcp serve` next to this interpreter;
- minimal: bench/baselines/minimal_server.py.

Per round, each system in turn (the order alternates round by round) makes --calls sequential
`call_tool("run_runnable", {"runnable_id": ECHO})` calls, each checked (not an error, status completed). Per round
and system: the client's round-trip p50 and p99 (its validation included), the server's CPU per call (utime + stime
from /proc of the server and its descendants, read before and after the round; an idle server uses none) and the
client's own CPU per call (time.process_time of this process, which runs nothing else meanwhile). Medians of rounds
are printed.

Then the check alone: on a result captured from each server, the session's own `validate_tool_result` and the bare
compiled validator (`best_match(iter_errors(...))`), --checks times per block, blocks alternated; and the same result
against variants of our outputSchema (each anyOf branch alone, branch orders, no `required`, no `enum`/`const`, ...),
to see what the check's time is spent on.

With --profile, only --profile-system runs (refactor-mcp unless told): py-spy records it (`-f raw -r 500`) while
calls go on, and its functions (refactor_mcp's, then all) are listed by inclusive share of the main thread's samples
and in microseconds per call (share x the main thread's measured CPU per call).

Every loop is bounded by a count, every request by a timeout, the profile by --profile-seconds + 60 s. Linux only.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from _emulator import start_emulator
from _machine import machine
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from mcp import ClientSession, StdioServerParameters, stdio_client
from referencing import Registry

from refactor_mcp.emulator import DEFAULT_API_KEY, ECHO_ID

BENCH = Path(__file__).resolve().parent
MINIMAL = BENCH / "baselines" / "minimal_server.py"
TOOL = "run_runnable"
REQUEST_TIMEOUT = 60.0
"""Longest wait for any one response; nothing here should take a tenth of it."""
WARM_UP_CALLS = 100
SAMPLE_RATE = 500
"""py-spy samples per second."""
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live descendants, plus what its waited-for children used."""
    total = 0.0
    for index, process in enumerate(descendants(pid)):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if index == 0 else 0)
    return total / CLOCK_TICK


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    return parents


def descendants(pid: int) -> list[int]:
    """pid first, then every live process below it."""
    parents = _parents()
    found = [pid]
    for process in found:  # grows as it goes; bounded by the number of processes
        found += [child for child, parent in parents.items() if parent == process and child not in found]
    return found


def child_running(script: str, known: set[int]) -> int:
    """As child_running, among children not in `known` (two servers may run the same script)."""
    found = []
    for child, parent in _parents().items():
        if parent != os.getpid() or child in known:
            continue
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(cmdline) > 1 and cmdline[1].decode().endswith(script):
            found.append(child)
    if len(found) != 1:
        raise RuntimeError(f"expected one new child running {script}, found {found}")
    return found[0]


class System:
    def __init__(self, name: str, session: ClientSession, pid: int) -> None:
        self.name, self.session, self.pid = name, session, pid
        self.captured: Any = None  # a CallToolResult, for the check-alone timings

    async def call(self) -> float:
        started = time.perf_counter()
        result = await self.session.call_tool(TOOL, {"runnable_id": ECHO_ID})
        elapsed = time.perf_counter() - started
        content = result.structured_content
        if result.is_error or not isinstance(content, dict) or content.get("status") != "completed":
            raise RuntimeError(f"{self.name}: call failed: {str(result)[:500]}")
        self.captured = result
        return elapsed

    async def round(self, calls: int) -> dict[str, float]:
        cpu, own = cpu_seconds(self.pid), time.process_time()
        times = [await self.call() for _ in range(calls)]
        own, cpu = time.process_time() - own, cpu_seconds(self.pid) - cpu
        return {
            "p50 ms": statistics.median(times) * 1000,
            "p99 ms": p99(times) * 1000,
            "server CPU ms/call": cpu / calls * 1000,
            "client CPU ms/call": own / calls * 1000,
        }


async def _unchecked(name: str, result: Any) -> None:
    """In place of ClientSession.validate_tool_result: no check."""


async def open_system(stack: AsyncExitStack, name: str, env: dict[str, str], log: Any, known: set[int]) -> System:
    if name.startswith("refactor-mcp"):
        command, args, script = str(Path(sys.executable).with_name("refactor-mcp")), ["serve"], "refactor-mcp"
    else:
        command, args, script = sys.executable, [str(MINIMAL)], MINIMAL.name
    params = StdioServerParameters(command=command, args=args, env=env)
    read, write = await stack.enter_async_context(stdio_client(params, errlog=log))
    session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT))
    await session.initialize()
    tools = await session.list_tools()  # the client now knows (and checks) the tool's outputSchema
    if TOOL not in [tool.name for tool in tools.tools]:
        raise RuntimeError(f"{name} lists no {TOOL}")
    if name == "refactor-mcp unchecked":
        session.validate_tool_result = _unchecked  # type: ignore[method-assign]
    system = System(name, session, child_running(script, known))
    known.add(system.pid)
    return system


SYSTEMS = ["refactor-mcp", "minimal", "refactor-mcp unchecked"]
COLUMNS = ["p50 ms", "p99 ms", "server CPU ms/call", "client CPU ms/call"]


async def calls(systems: list[System], options: argparse.Namespace) -> None:
    for system in systems:
        for _ in range(WARM_UP_CALLS):
            await system.call()
    figures: dict[str, list[dict[str, float]]] = {system.name: [] for system in systems}
    print(f"\n{options.calls} sequential call_tool per system per round, {options.rounds} rounds, order alternating")
    print(f"{'round':>5} {'system':>24} " + " ".join(f"{column:>19}" for column in COLUMNS))
    for number in range(options.rounds):
        for system in systems if number % 2 == 0 else systems[::-1]:
            figures[system.name].append(await system.round(options.calls))
            shown = " ".join(f"{figures[system.name][-1][column]:>19.3f}" for column in COLUMNS)
            print(f"{number + 1:>5} {system.name:>24} {shown}", flush=True)
    medians = {name: {c: statistics.median(r[c] for r in rounds) for c in COLUMNS} for name, rounds in figures.items()}
    print(f"\nMedians of {options.rounds} rounds")
    print(f"{'system':>30} " + " ".join(f"{column:>19}" for column in COLUMNS))
    for name, values in medians.items():
        print(f"{name:>30} " + " ".join(f"{values[column]:>19.3f}" for column in COLUMNS))
    if "minimal" in medians:
        minimal = medians["minimal"]
        for name in medians:
            if name != "minimal":
                shown = " ".join(f"{medians[name][c] / minimal[c]:>18.3f}x" for c in COLUMNS)
                print(f"{name + ' / minimal':>30} {shown}")
                per_round = [
                    ours["p50 ms"] / theirs["p50 ms"]
                    for ours, theirs in zip(figures[name], figures["minimal"], strict=True)
                ]
                print(f"{'p50 ratio round by round':>30} {', '.join(f'{value:.3f}' for value in per_round)}")


def time_per_call(function: Callable[[], Any], checks: int, blocks: int) -> float:
    """Median over blocks of the time per call, in microseconds."""
    times = []
    for _ in range(blocks):
        started = time.perf_counter()
        for _ in range(checks):
            function()
        times.append((time.perf_counter() - started) / checks)
    return statistics.median(times) * 1e6


def checker(schema: dict[str, Any]) -> Callable[[Any], Any]:
    """The SDK's check (mcp.client.session._output_schema_validator and validate_tool_result), compiled once."""
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, registry=Registry())
    return lambda instance: best_match(validator.iter_errors(instance))


def variants(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Our outputSchema and changes to it, each still accepting the captured result (checked before timing)."""
    branches = schema["anyOf"]
    run_state = branches[0]

    def without(node: Any, keys: set[str]) -> Any:
        if isinstance(node, list):
            return [without(item, keys) for item in node]
        if not isinstance(node, dict):
            return node
        return {
            k: without(v, keys) if k != "properties" else {p: without(s, keys) for p, s in v.items()}
            for k, v in node.items()
            if k not in keys
        }

    def no_nullable(node: Any) -> Any:  # ["string", "null"] -> "string": what a type list costs over one type
        if isinstance(node, list):
            return [no_nullable(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {
            k: no_nullable(v) if k != "properties" else {p: no_nullable(s) for p, s in v.items()}
            for k, v in node.items()
        }
        if isinstance(out.get("type"), list):
            out.pop("type")
        return out

    def map_types(node: Any, change: Callable[[dict[str, Any]], Any]) -> Any:
        """`change` applied to every subschema whose type is a list, bottom up."""
        if isinstance(node, list):
            return [map_types(item, change) for item in node]
        if not isinstance(node, dict):
            return node
        out = {
            k: map_types(v, change) if k != "properties" else {p: map_types(s, change) for p, s in v.items()}
            for k, v in node.items()
        }
        return change(out) if isinstance(out.get("type"), list) else out

    def null_first(node: dict[str, Any]) -> dict[str, Any]:
        return {**node, "type": sorted(node["type"], key=lambda t: t != "null")}

    def scalar_true(node: dict[str, Any]) -> Any:  # a nullable scalar: the boolean schema `true` (no descend)
        return True if set(node) == {"type"} and "object" not in node["type"] else node

    result_schema = run_state["properties"]["result"]
    shallow_run_state = {
        "type": "object",
        "properties": {"status": run_state["properties"]["status"]},
        "required": run_state["required"],
    }
    return {
        "ours (as served)": schema,
        "RunState branch alone": {"type": "object", **run_state},
        "ErrorOutcome branch alone (fails)": {"type": "object", **branches[1]},
        "RunningOutcome branch alone (fails)": {"type": "object", **branches[2]},
        "branches: RunState last": {**schema, "anyOf": [branches[1], branches[2], run_state]},
        "no anyOf: {type: object}": {"type": "object"},
        "no `required`": without(schema, {"required"}),
        "no `enum`/`const`": without(schema, {"enum", "const"}),
        "no type lists (nullable fields untyped)": no_nullable(schema),
        "RunState: status+required only": {**schema, "anyOf": [shallow_run_state, branches[1], branches[2]]},
        "RunState: no `result` subschema": {
            **schema,
            "anyOf": [
                {**run_state, "properties": {k: v for k, v in run_state["properties"].items() if k != "result"}},
                branches[1],
                branches[2],
            ],
        },
        "oneOf instead of anyOf": {"type": "object", "oneOf": branches},
        "same set: no `type: object` in branches": {
            **schema,
            "anyOf": [{k: v for k, v in branch.items() if k != "type"} for branch in branches],
        },
        "same set: type lists null first": map_types(schema, null_first),
        "nullable scalars as `true`": map_types(schema, scalar_true),
        "result.usage: array|null, items untyped": {
            **schema,
            "anyOf": [
                {
                    **run_state,
                    "properties": {
                        **run_state["properties"],
                        "result": {
                            **result_schema,
                            "properties": {**result_schema["properties"], "usage": {"type": ["array", "null"]}},
                        },
                    },
                },
                branches[1],
                branches[2],
            ],
        },
    }


async def checks(systems: list[System], options: argparse.Namespace) -> None:
    print(f"\nThe client's check alone, us per call (median of {options.blocks} blocks of {options.checks})")
    validate: dict[str, Callable[[], Any]] = {}
    for system in systems:
        result = system.captured
        session = system.session

        def full(session: ClientSession = session, result: Any = result) -> None:
            coroutine = session.validate_tool_result(TOOL, result)
            try:
                coroutine.send(None)  # it does not suspend: the schema is cached, no list_tools
            except StopIteration:
                return
            raise RuntimeError("validate_tool_result suspended")

        validate[f"{system.name}: session.validate_tool_result"] = full
        schema = session._tool_output_schemas.get(TOOL)  # what the SDK checks against
        if schema is not None:
            check = checker(schema)
            validate[f"{system.name}: compiled validator"] = functools.partial(check, result.structured_content)
    timings: dict[str, list[float]] = {name: [] for name in validate}
    for _ in range(3):  # the rows alternate, three passes, medians
        for name, function in validate.items():
            timings[name].append(time_per_call(function, options.checks, options.blocks))
    for name, values in timings.items():
        print(f"  {name:<52} {statistics.median(values):>8.1f}")

    ours = next((system for system in systems if system.name == "refactor-mcp"), None)
    if ours is None:
        return
    schema = ours.session._tool_output_schemas[TOOL]
    assert schema is not None
    content = ours.captured.structured_content
    print(f"\nVariants of our outputSchema on the captured ECHO result ({len(str(content))} chars), us per check")
    rows: dict[str, Callable[[Any], Any]] = {}
    for name, variant in variants(copy.deepcopy(schema)).items():
        check = checker(variant)
        error = check(content)
        if (error is None) == name.endswith("(fails)"):
            raise RuntimeError(f"variant {name!r}: unexpected outcome {error}")
        rows[name] = check
    timings = {name: [] for name in rows}
    for _ in range(3):
        for name, check in rows.items():
            timings[name].append(time_per_call(functools.partial(check, content), options.checks, options.blocks))
    base = statistics.median(timings["ours (as served)"])
    for name, values in timings.items():
        value = statistics.median(values)
        print(f"  {name:<52} {value:>8.1f} {value - base:>+8.1f}")


def thread_cpu_seconds(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


async def profile(system: System, options: argparse.Namespace) -> None:
    """py-spy on one server while calls go on: its functions by inclusive share of the main thread's samples, and
    in microseconds per call (share x the main thread's measured CPU per call, from /proc/<pid>/task/<pid>/stat).

    The main thread runs the event loop, so every coroutine's frames are in its stacks; the other threads are the
    SDK's stdio workers (anyio.to_thread), mostly blocked in read(). py-spy counts a thread that is runnable but
    not running (a loaded machine) as busy, so the shares are scaled by measured CPU rather than by sample counts.
    """
    for _ in range(WARM_UP_CALLS):
        await system.call()
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "-p", str(system.pid), "-f", "raw", "-o", str(options.profile)]
    command += ["-r", str(SAMPLE_RATE)]
    command += ["-d", str(options.profile_seconds)] + (["--nonblocking"] if options.nonblocking else [])
    command += ["--gil"] if options.gil else []
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    await anyio.sleep(1.0)  # py-spy attaches
    cpu, main_cpu = cpu_seconds(system.pid), thread_cpu_seconds(system.pid, system.pid)
    started, count = time.perf_counter(), 0
    with anyio.fail_after(options.profile_seconds + 60):
        while recorder.poll() is None and count < 1_000_000:
            await system.call()
            count += 1
    cpu, wall = cpu_seconds(system.pid) - cpu, time.perf_counter() - started
    main_cpu = thread_cpu_seconds(system.pid, system.pid) - main_cpu
    _, errors = recorder.communicate(timeout=30)
    if recorder.returncode != 0:
        raise RuntimeError(f"py-spy failed: {errors}")
    print(
        f"\nProfile of {system.name}: {count} calls in {wall:.1f} s while py-spy recorded (to {options.profile}); "
        f"server CPU {cpu / count * 1e6:.0f} us/call, of which the main thread {main_cpu / count * 1e6:.0f}"
    )
    aggregate(options.profile, main_cpu / count * 1e6, count, options.top)


def aggregate(path: Path, cpu_per_call_us: float, calls: int, top: int) -> None:
    """Main-thread stacks only; each function counted once per stack (inclusive). Two per-call figures: samples x
    2 ms / calls (at 500 Hz; with --gil, time holding the GIL, which on a loaded machine includes time descheduled
    while holding it), and share x the main thread's measured CPU per call."""
    ours: Counter[str] = Counter()
    everything: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not stack or not frames[0].startswith("<module>"):
            continue
        samples = int(count)
        total += samples
        names = {frame.split(":")[0] + ")" for frame in frames}  # "function (file" + ")": the line dropped
        for name in names:
            everything[name] += samples
            if "refactor_mcp/" in name:
                ours[name] += samples
    per_sample = 1e6 / SAMPLE_RATE / calls
    print(
        f"{total} main-thread samples = {total * per_sample:.0f} us/call; main-thread CPU {cpu_per_call_us:.0f} us/call"
    )
    for title, counter in (("refactor_mcp functions", ours), ("all functions", everything)):
        print(f"  {title + ' (inclusive)':<84} {'share':>6} {'us/call':>8} {'CPU-scaled':>10}")
        for name, samples in counter.most_common(top):
            print(
                f"  {name[:84]:<84} {samples / total:>6.1%} {samples * per_sample:>8.1f} "
                f"{samples / total * cpu_per_call_us:>10.1f}"
            )


async def main(options: argparse.Namespace) -> None:
    print(machine())
    emulator, base_url = start_emulator()
    log_path = Path(tempfile.mkdtemp(prefix="refactor-stdio-client-")) / "servers.log"
    print(f"Emulator at {base_url}; servers' stderr in {log_path}")
    env = {"REFACTOR_API_KEY": DEFAULT_API_KEY, "REFACTOR_BASE_URL": base_url}
    names = [options.profile_system] if options.profile else options.systems
    try:
        with log_path.open("a") as log:
            async with AsyncExitStack() as stack:
                known: set[int] = set()
                systems = [await open_system(stack, name, env, log, known) for name in names]
                print("Servers: " + ", ".join(f"{system.name} pid {system.pid}" for system in systems))
                if options.profile:
                    await profile(systems[0], options)
                else:
                    await calls(systems, options)
                    await checks(systems, options)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    print(f"load average at the end: {', '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=SYSTEMS,
        default=SYSTEMS,
        help="'refactor-mcp unchecked': its client skips the check",
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=300, help="sequential calls per system per round")
    parser.add_argument("--checks", type=int, default=2000, help="checks per timing block")
    parser.add_argument("--blocks", type=int, default=5, help="timing blocks per row and pass")
    parser.add_argument("--profile", type=Path, help="py-spy raw output: profile --profile-system alone")
    parser.add_argument("--profile-seconds", type=int, default=15)
    parser.add_argument("--profile-system", choices=["refactor-mcp", "minimal"], default="refactor-mcp")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil: only samples holding the GIL (on CPU)")
    parser.add_argument("--top", type=int, default=40, help="functions listed per profile table")
    parser.add_argument("--nonblocking", action="store_true", help="py-spy --nonblocking (does not pause the server)")
    anyio.run(main, parser.parse_args())
