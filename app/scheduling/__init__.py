"""Admission and dynamic batching in front of an engine, and the ledger of memory claims."""
