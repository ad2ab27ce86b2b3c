"""Subcommands of ``athena-supervisor``; each module registers one."""
