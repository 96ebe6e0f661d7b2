"""Organisations, users, the set-up of their second factor, and the
emails and pages about them."""
