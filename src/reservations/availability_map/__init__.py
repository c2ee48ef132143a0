"""The availability map: a Redis bitmap per resource and day that refuses a create on a taken
range without asking PostgreSQL (store.py), kept right after every commit and repaired from
the database by the worker (repair.py)."""
