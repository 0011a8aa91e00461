"""The MCP protocol side: upstream face and transports, downstream pool, relay of host requests. No policy."""
