"""Development tools (not shipped in the agent package)."""
