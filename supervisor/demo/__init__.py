"""``athena-supervisor demo``: the daemon against the embedded emulator, with a scripted workload.

- :mod:`~supervisor.demo.scenario`: the workload and its expected outcomes, derived from the config.
- :mod:`~supervisor.demo.workload`: the user's side, through the Athena API.
- :mod:`~supervisor.demo.narration`: the running commentary (an :class:`~supervisor.events.EventSink`).
- :mod:`~supervisor.demo.runner`: starts everything, waits for each outcome, checks it.
- :mod:`~supervisor.demo.report`: the summary table and footer.
"""
