"""Operating the pipeline at scale (workers, scheduler, status, roles, store hygiene).

Placeholder until the workers module lands: it adds no commands yet.
"""


def add_commands(command) -> None:
    """Register this module's sub-commands through ``command(name, handler, help)``."""
