"""`python -m refactor_mcp`: the same as the `refactor-mcp` command."""

from refactor_mcp.cli import main  # absolute: bundles run this file as a script

raise SystemExit(main())
