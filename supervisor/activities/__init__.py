"""The daemon's activities: one long-running task each, collaborators injected, started by
:mod:`supervisor.service`.

discovery ─► checks ─► enforcement; accounting ─► budgets ─► enforcement; checks and budgets ─► warnings.
"""
