"""The MCP tool surface: the tools' arguments, schemas and definitions, their results, and the runner that calls
the API for them. `arguments` and `runnables` do without the MCP SDK: `check` and start-up checks use them."""
