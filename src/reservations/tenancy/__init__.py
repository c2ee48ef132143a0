"""Tenants, API keys, roles and authentication."""
