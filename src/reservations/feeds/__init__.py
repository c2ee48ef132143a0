"""Calendar feeds (migration 0005f): secret-token iCalendar (RFC 5545) feeds of a resource
or of one API key's reservations."""
