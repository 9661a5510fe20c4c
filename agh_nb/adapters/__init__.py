"""Adapters: the only modules importing acp, duckdb and cryptography."""
