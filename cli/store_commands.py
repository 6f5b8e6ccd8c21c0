"""store_commands: verbs registered on the `trainledger` group (see cli.main)."""
