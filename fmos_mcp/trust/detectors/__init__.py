"""Detectors: pure functions over tool definitions, call arguments and results. No I/O, no model calls."""

from fmos_mcp.trust.detectors.findings import Finding

__all__ = ["Finding"]
