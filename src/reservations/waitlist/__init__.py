"""Waiting for a taken range: entries, and their promotion into holds when it frees."""
