"""The outbox (migration 0004): events written by triggers, read in commit-safe order."""
