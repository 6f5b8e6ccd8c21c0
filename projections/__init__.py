"""Read models of the ledger, kept with tracking so each event is applied exactly once.

- `projection`: the library `Projection` that turns events into facts;
- `facts`: what the views store (timestamped, never overwritten: as-of reads);
- `view`: the abstract view, each writing its facts and its tracking position
  in one transaction; the concrete views, one per store backend, are
  adapters (`adapters.sqlite.view`, `adapters.postgres.view`,
  `adapters.memory.view`);
- `log`: reading the application's log in pages;
- `read_model`: the catch-up loop, rebuilds, and the queries, implementing
  the port `service.queries.ReadModel`;
- `documents`: facts turned into the documents the ledger answers with;
- `filters`: what the queries take and give.

Nothing here imports `adapters`, `service` or `cli`.
"""
