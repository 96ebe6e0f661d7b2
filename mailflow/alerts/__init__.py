"""Issuing alerts, fanning them out to every recipient, and what became of each email."""
