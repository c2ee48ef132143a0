"""A multi-tenant reservation API whose no-double-booking guarantee lives in PostgreSQL."""

__version__ = "0.1.0"
