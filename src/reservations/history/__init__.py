"""Reservations that ended long ago, moved out of the live table into monthly history."""
