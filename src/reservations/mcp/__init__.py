"""The agent-safe booking surface: a Model Context Protocol server (docs/agents.md), served at
/mcp by `reservations serve` (streamable HTTP) and by `reservations mcp` (stdio). Its tools call
the same use cases as the HTTP routes, with the same models and the same problem bodies."""
