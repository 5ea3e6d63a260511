"""Command line: `refactor-mcp [serve]` (MCP over stdio), `check`, `emulator` and `demo`.

Only what a command needs is imported when it runs: clients spawn `serve` at start-up, so it must not pay
for the emulator or the demo.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import anyio

from ._version import __version__
from .errors import cannot_listen
from .logs import configure_logging

if TYPE_CHECKING:
    from .config import Settings


def _serve_options(*, dirs_per_flag: int | str) -> argparse.ArgumentParser:
    """The serve options; `dirs_per_flag` is how many values one --allow-dir takes (argparse's nargs).

    SUPPRESS keeps an absent flag from overwriting one given at the other level (with or without `serve`).
    """
    serve_options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    serve_options.add_argument("--base-url", help="re-factor API base URL (env REFACTOR_BASE_URL)")
    serve_options.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (env REFACTOR_LOG_LEVEL)")
    serve_options.add_argument(
        "--allow-dir",
        dest="allowed_dirs",
        action="extend",
        nargs=dirs_per_flag,
        metavar="DIR",
        help="a directory whose files `path` resources may read; repeat it for more (env REFACTOR_ALLOWED_DIRS)",
    )
    serve_options.add_argument(
        "--runnables-file", help="TOML file of runnables to expose as named tools (env REFACTOR_RUNNABLES_FILE)"
    )
    serve_options.add_argument(
        "--transport", choices=["stdio", "http"], help="stdio (the default) or streamable HTTP (env REFACTOR_TRANSPORT)"
    )
    serve_options.add_argument("--host", dest="http_host", help="HTTP: address to listen on (default 127.0.0.1)")
    serve_options.add_argument("--port", dest="http_port", type=int, help="HTTP: port to listen on (default 8000)")
    serve_options.add_argument(
        "--stateless", dest="http_stateless", action="store_true", help="HTTP: no per-session state (scale-out)"
    )
    serve_options.add_argument(
        "--json-response", dest="http_json_response", action="store_true", help="HTTP: JSON bodies instead of SSE"
    )
    serve_options.add_argument(
        "--workers", dest="http_workers", type=int, help="HTTP: worker processes; needs --stateless (default 1)"
    )
    serve_options.add_argument(
        "--drain-seconds",
        dest="http_drain_seconds",
        type=float,
        help="HTTP: on SIGTERM, seconds /healthz answers 503 while still serving, before the listener closes "
        "(default 5)",
    )
    serve_options.add_argument(
        "--public-url",
        dest="http_public_url",
        help="HTTP: the MCP endpoint's public URL, e.g. https://mcp.example.com/mcp (env REFACTOR_HTTP_PUBLIC_URL)",
    )
    serve_options.add_argument(
        "--oauth-issuer", help="HTTP: accept OAuth access tokens from this issuer (env REFACTOR_OAUTH_ISSUER)"
    )
    serve_options.add_argument(
        "--read-timeout-seconds",
        type=float,
        help="how long to wait for a run that sets no timeout_seconds (env REFACTOR_READ_TIMEOUT_SECONDS)",
    )
    return serve_options


COMMANDS = {
    "serve": "serve MCP over stdio (the default) or streamable HTTP",
    "check": "check the configuration, the API and the key; print each problem with its fix",
    "emulator": "run a local stand-in of the re-factor API (loopback only)",
    "demo": "run the server against a local emulator and show what a user sees",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refactor-mcp",
        description="MCP server for the re-factor API. Without a command, serves MCP over stdio for an MCP client. "
        "Set REFACTOR_API_KEY in the client's configuration, and run `refactor-mcp check` to test it.",
        # Before a command, one value per --allow-dir, so that `--allow-dir DIR check` is the check command.
        parents=[_serve_options(dirs_per_flag=1)],
    )
    parser.add_argument("--version", action="version", version=f"refactor-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")

    def command(name: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=COMMANDS[name],
            description=COMMANDS[name][:1].upper() + COMMANDS[name][1:] + ".",
            parents=parents,
        )

    # After a command, --allow-dir takes every DIR that follows: Claude Desktop passes a folder list that way.
    greedy = _serve_options(dirs_per_flag="*")
    command("serve", [greedy])
    command("check", [greedy])
    emulator = command("emulator", [])
    emulator.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=8787, help="port to bind; 0 picks a free one (default 8787)")
    emulator.add_argument("--api-key", help="bearer token the emulator accepts (default: emulator-key)")
    command("demo", [])
    return parser


SETTINGS_FLAGS = (
    "base_url",
    "runnables_file",
    "log_level",
    "read_timeout_seconds",
    "allowed_dirs",
    "transport",
    "http_host",
    "http_port",
    "http_stateless",
    "http_json_response",
    "http_workers",
    "http_drain_seconds",
    "http_public_url",
    "oauth_issuer",
)
"""Flags whose destination is a Settings field: they override the environment."""


def _settings(args: argparse.Namespace) -> Settings | None:
    """Settings from the environment with the flags over it, or None after saying what is wrong.

    The runnables file is checked here too, so a bad one stops start-up with its message, before any transport.
    """
    # Here rather than at the top: --version and --help answer without pydantic.
    from pydantic import ValidationError

    from .config import Settings

    overrides = {name: value for name in SETTINGS_FLAGS if (value := getattr(args, name, None)) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            (f"REFACTOR_{str(e['loc'][0]).upper()}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        _invalid(problems)
        return None
    if settings.runnables_file is not None:
        from .tools.runnables import RunnablesFileError, load

        try:
            load(settings.runnables_file)
        except RunnablesFileError as exc:
            print(f"refactor-mcp: {exc}", file=sys.stderr)
            return None
    return settings


def _invalid(problems: str) -> None:
    print(f"refactor-mcp: invalid configuration: {problems}", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    configure_logging(settings)
    if settings.api_key_problem is not None:  # over stdio only: Settings refuses it over HTTP
        logging.getLogger("refactor_mcp").error(
            "%s. Serving anyway, so that the client shows the tools: every call answers invalid_api_key until the "
            "key is corrected and the server restarted.",
            settings.api_key_problem,
        )
    if settings.run_store_url is not None and (problem := anyio.run(_store_problem, settings)) is not None:
        print(f"refactor-mcp: {problem}", file=sys.stderr)
        return 1
    if settings.transport == "stdio":
        signal.signal(signal.SIGINT, _interrupted)
    # Clients spawn the server and wait for it: importing the SDK allocates a great deal and frees almost
    # nothing, so collecting garbage meanwhile is wasted time (about a tenth of start-up). What start-up made
    # is then frozen out of later collections.
    gc.disable()
    try:
        if settings.transport == "http":
            from .server.http import serve_http
        else:
            from .server.stdio import serve_stdio
    finally:
        gc.freeze()
        gc.enable()
    if settings.transport == "http":
        return serve_http(settings)
    if sys.stdin.isatty():  # a person, not an MCP client, started it
        print(
            "refactor-mcp: MCP server for the re-factor API, waiting for an MCP client on stdin. To try it, run "
            "`refactor-mcp demo`; to stop, press Ctrl-C.",
            file=sys.stderr,
        )
    anyio.run(serve_stdio, settings)
    return 0


async def _store_problem(settings: Settings) -> str | None:
    from .runs import store_problem  # the Redis client: only with a shared store

    return await store_problem(settings)


def _interrupted(signum: int, frame: FrameType | None) -> NoReturn:
    """Ctrl-C stops the stdio server at once. A graceful stop would wait for the next line on stdin: the SDK
    reads it in a thread that nothing can cancel. Exiting closes any upstream request in flight with the process."""
    print("refactor-mcp: interrupted (Ctrl-C); stopped.", file=sys.stderr, flush=True)
    os._exit(130)


def _check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    if settings.api_key_problem is not None:
        _invalid(settings.api_key_problem)
        return 2
    from .check import run_check

    return run_check(settings)


def _emulator(args: argparse.Namespace) -> int:
    from . import emulator

    api_key = args.api_key or emulator.DEFAULT_API_KEY

    def ready(url: str) -> None:
        # The URL comes first and alone on its line: scripts and tests read it from there.
        print(url, flush=True)
        print(f"Emulator of the re-factor API. Use REFACTOR_BASE_URL={url} REFACTOR_API_KEY={api_key}")
        print("Sample runnables:")
        for runnable_id, what in emulator.SAMPLE_RUNNABLES.items():
            print(f"  {runnable_id}  {what}")
        print("Ctrl-C to stop.", flush=True)

    try:
        anyio.run(lambda: emulator.serve(args.host, args.port, api_key, ready))
    except ValueError as exc:  # a non-loopback host
        print(f"refactor-mcp emulator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, or not ours to bind
        print(f"refactor-mcp emulator: {cannot_listen(args.host, args.port, exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return anyio.run(run_demo)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"check": _check, "emulator": _emulator, "demo": _demo}.get(args.command, _serve)
    return command(args)
