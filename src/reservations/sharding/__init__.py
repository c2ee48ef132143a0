"""Sharding by resource across independent PostgreSQL clusters (DESIGN.md, "Sharding")."""
