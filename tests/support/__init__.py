"""Helpers the tests share: oracles (closed forms), HTTP helpers, server processes, clients."""
