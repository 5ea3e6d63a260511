"""`python -m refactor_mcp`: the same as the `refactor-mcp` command."""

from .cli import main

raise SystemExit(main())
