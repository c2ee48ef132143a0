"""The audit log (migration 0007): rows written by triggers, sealed into a hash chain by a
background job, verified by `reservations audit verify`, read by admins at /v1/audit."""
