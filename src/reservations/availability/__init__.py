"""Booking rules and availability: what may be booked, and what is free (pure functions in
rules.py and slots.py; I/O in service.py)."""
