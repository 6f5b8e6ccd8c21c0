"""The ledger as an HTTP service (SPEC §10): a driving adapter, like the CLI.

`app.create_app` builds the FastAPI application on one store: the routes of
`/v1` (one module per resource: `commands`, `queries`, `tokens`, `stream`),
the web pages (`pages`), their error mapping (`errors`), authentication
(`auth`), the request limits and headers (`limits`) and the worker threads
that hold the ledgers (`ledgers`). `cli/serve_commands.py` composes it and
runs it on uvicorn.
"""
