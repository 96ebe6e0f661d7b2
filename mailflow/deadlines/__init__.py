"""Chasing: reminders before an alert's deadline, overdue notices and
escalations at it, follow-ups after it, and update-due chasers until
remediation is done; all decided by the scheduler from the database."""
