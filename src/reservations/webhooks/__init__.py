"""Webhooks (issue 9): endpoints tenants register, fanned out from the outbox, delivered by
the worker with Standard Webhooks signatures, retries, ordering per resource and a log."""
