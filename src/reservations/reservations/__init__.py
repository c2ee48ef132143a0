"""Reservations: create, hold, confirm, reschedule, cancel, expire."""
