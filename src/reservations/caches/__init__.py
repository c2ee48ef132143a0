"""Caches in the Redis/Valkey tier of rows that several domains read on hot paths."""
