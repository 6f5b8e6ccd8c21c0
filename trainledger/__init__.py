"""trainledger: an event-sourced ledger for machine-learning training lineage.

The distribution installs this one package. Its subpackages are the
repository's top-level folders (`domain`, `service`, `projections`,
`adapters`, `cli`), linked here so that the source tree and the installed
package have the same import names; see ARCHITECTURE.md.
"""
