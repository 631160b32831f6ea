"""The GPU hosts' job protocol under /api/v1/runner (service: the rules; router: HTTP; schemas: bodies)."""
