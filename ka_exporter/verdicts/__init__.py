"""Verdicts: pure functions of records and a clock. No I/O, no prometheus_client, no threads."""
