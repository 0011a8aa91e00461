"""fmos-mcp: a Foundation Model Operating System in the shape of an MCP gateway."""

__version__ = "0.1.0"
