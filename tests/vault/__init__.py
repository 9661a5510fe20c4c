"""Tests of the vault adapter, the ref grammar and redaction (issue 5)."""
