"""deskpilot api: the composition root (settings, CLI, HTTP service)."""
