"""A real MCP server for the tests (the official `mcp` SDK's MCPServer over Streamable HTTP):
two tools, `add` and `delete_everything`, so a gateway's tool filter has one to let through
and one to refuse.

    python tests/python/mcp_server.py PORT      # serves http://127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("weir-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@server.tool()
def delete_everything() -> str:
    """A tool no gateway should let through."""
    return "everything is gone"


if __name__ == "__main__":
    port = int(sys.argv[1])
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")
