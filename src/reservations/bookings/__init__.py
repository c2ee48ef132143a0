"""Bookings: several reservations made, confirmed, moved and cancelled as one (a recurring
series, a multi-resource group, or both)."""
