"""Building blocks that know nothing about bookings."""
