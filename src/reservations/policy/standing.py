"""What a booking already made is held to when its resource's policy changes (a policy
change's preview and its `affected` action, resources/affected.py).

The rules on the booking itself (opening hours, date overrides, blackouts, the grid, the
minimum and maximum duration) are asked again, by the same functions admission asks
(reservations/admission.py `violations`, policy/rules.py `check`), so a listed reservation's
reasons read exactly like a create's 422. The rules on *when* a booking may be made (the
notice, the advance, not in the past) judged it when it was made and are not asked again: a
new `max_advance` does not refuse what was booked further ahead before, nor a new
`min_notice` what is due tomorrow. The booker limit is not asked either: it counts a
booker's bookings, and which of them would be the one too many is not the booking's fault;
a lowered limit binds the bookings made afterwards."""

from __future__ import annotations

from datetime import timedelta

from reservations.policy.model import Policy

# Bookings starting later than this after now are not examined. No policy's max_advance can
# be longer (durations are at most P366D), so every booking made under an advance limit
# lies within it.
HORIZON = timedelta(days=366)
# At most this many live reservations are examined per change, earliest first (the rules cost
# a fraction of a millisecond of CPU per reservation, off the event loop); a resource
# with more within the horizon is examined up to the start of the last one read, and the
# answer says so (`complete: false`, `horizon`).
MAX_EXAMINED = 2_000
# At most this many reservations are cancelled by one change (each goes through the cancel
# of a reservation: its own update, map change and waitlist offer).
MAX_CANCELLED = 1_000

# The fields whose rules judge when a booking is made, not the booking.
WHEN_BOOKED = ("min_notice", "max_advance")


def standing(policy: Policy) -> Policy:
    """The policy a booking already made is held to: without the rules on when to book."""
    return policy.model_copy(update=dict.fromkeys(WHEN_BOOKED))
