"""Bookable things: rooms, desks, courts, vehicles, staff, seats."""
