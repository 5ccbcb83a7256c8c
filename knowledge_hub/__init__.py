"""deskpilot knowledge hub: articles, versions, vector index and retrieval."""
