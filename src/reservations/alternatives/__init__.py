"""Bookable alternatives for a refused write (docs/api.md, "Alternatives")."""
