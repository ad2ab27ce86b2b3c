"""The pure core: no I/O, no clock reads (``now`` is an argument), frozen values.

model (snapshots, target keys, verdicts), accrual (DPU-hours, cost, rates), policy (compilation and
evaluation), scheduling (what to look at next), escalation (the enforcement state machine), budgets (periods,
allocation, thresholds), safety (rate limit and circuit breaker), inventory (what is known).
"""
