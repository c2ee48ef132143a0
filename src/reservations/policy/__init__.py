"""A resource's booking policy and its rules, pure: the policy model (model.py), the rules a
range is checked against in the resource's local time (rules.py), and turning their verdicts
into refusals (enforce.py). No database, no I/O: what a rule needs to know about existing
bookings (the booker's starts) is given to it as data."""
