"""The session core: lifecycle, records, turns and the ports adapters implement.

Must not import acp, duckdb, cryptography, IPython, ipywidgets or tornado.
"""
