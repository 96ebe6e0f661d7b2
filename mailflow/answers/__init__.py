"""Statuses, the reply grammar, recording answers and pending ones,
receipts, and the answer pages."""
