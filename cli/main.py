"""The `trainledger` command (the console script and `python -m trainledger.cli`).

The application is `cli.app`; importing each command module registers its
verbs on the app's groups, so this module imports them all and nothing else
does.
"""

from __future__ import annotations

from trainledger.cli import (
    deploy_commands,
    lifecycle_commands,
    query_commands,
    seed_commands,
    serve_commands,
    store_commands,
    token_commands,
    trainer_commands,
)
from trainledger.cli.app import cli, main

__all__ = [
    "cli",
    "deploy_commands",
    "lifecycle_commands",
    "main",
    "query_commands",
    "seed_commands",
    "serve_commands",
    "store_commands",
    "token_commands",
    "trainer_commands",
]
