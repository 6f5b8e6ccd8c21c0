"""Read models of the ledger, kept with tracking so each event is applied exactly once.

- `projection`: the library `Projection` that turns events into facts;
- `facts`: what the views store (timestamped, never overwritten: as-of reads);
- `view`: the abstract view; `sqlite_view`, `memory_view`, `postgres_view`:
  one per store backend, each writing its facts and its tracking position in
  one transaction;
- `log`: reading the application's log in pages;
- `read_model`: the catch-up loop, rebuilds, and the queries, implementing
  the port `domain.queries.ReadModel`;
- `documents`: facts turned into the documents the ledger answers with.
"""
