"""Composing and sending email: templates, headers, one-off emails, the transport."""
