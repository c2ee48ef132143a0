"""Reminders: `reservation.reminder` before a start, `hold.expiring` before a hold lapses."""
