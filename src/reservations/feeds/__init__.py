"""Calendar feeds (migration 0007): secret-token iCalendar (RFC 5545) feeds of a resource
or of one API key's reservations."""
