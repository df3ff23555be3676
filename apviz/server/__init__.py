"""The web side: SSE hub, JSON API, metrics; one concept per module."""
