"""What changed since an auditor's last digest: each digest keeps a
snapshot of the figures it sent (per alert reference, as JSON), and the
next one compares its own with it.  Pure functions: no I/O, no clock.

Only the figures and the time of the newest answer are compared, never
how long ago something happened, so a day in which nobody answered and no
deadline passed changes nothing, and the auditor gets the one-line "no
changes" email."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mailflow.core.mail.templates import counted
from mailflow.reports.figures import AlertFigures

# One alert's figures as a digest sent them: counts, and what they mean.
AlertSnapshot = dict[str, Any]
# Alert reference -> its snapshot.
Snapshot = dict[str, AlertSnapshot]

# The current statuses, in the order a digest names them.
STATUS_NAMES = (
    ("in_progress", "in progress"),
    ("complete", "complete"),
    ("not_applicable", "not applicable"),
    ("unable", "unable"),
    ("no_answer", "no answer"),
)


@dataclass(frozen=True)
class Change:
    reference: str
    what: str

    def __str__(self) -> str:
        return f"{self.reference}: {self.what}"


def snapshot_of(figures: Iterable[AlertFigures]) -> Snapshot:
    return {f.reference: _alert_snapshot(f) for f in figures}


def _alert_snapshot(f: AlertFigures) -> AlertSnapshot:
    past_deadline = f.as_at >= f.deadline_at
    return {
        "title": f.title,
        "severity": f.severity,
        "deadline_at": f.deadline_at.isoformat(),
        "in_scope": f.in_scope,
        "answered": f.answered,
        **{key: getattr(f, key) for key, _ in STATUS_NAMES},
        "unreachable": f.unreachable,
        "overdue_updates": f.overdue_updates,
        # Organisations with no answer once the deadline has passed.
        "overdue": f.no_answer + f.unreachable if past_deadline else 0,
        # Answers given since, even those that leave every count as it
        # was (two organisations swapping statuses, a new reason).
        "last_answer_at": f.last_answer_at.isoformat() if f.last_answer_at else None,
    }


def dumps(snapshot: Snapshot) -> str:
    return json.dumps(snapshot, sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> Snapshot | None:
    """A stored snapshot; None when there is none (or it cannot be read,
    which then counts as no previous digest to compare with)."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def changes(previous: Snapshot, current: Snapshot) -> list[Change]:
    """Everything that differs, alert by alert: new alerts first, then the
    alerts both digests had, then those no longer open."""
    found = [
        Change(ref, f"new alert, {now['severity']}: {now['title']}")
        for ref, now in current.items()
        if ref not in previous
    ]
    for ref, now in current.items():
        if ref in previous:
            found.extend(Change(ref, what) for what in _alert_changes(previous[ref], now))
    found.extend(Change(ref, "closed") for ref in previous if ref not in current)
    return found


def _alert_changes(before: AlertSnapshot, now: AlertSnapshot) -> list[str]:
    lines: list[str] = []
    if before.get("deadline_at") != now["deadline_at"]:
        lines.append("answers asked for again, with a new deadline")
    if before.get("in_scope") != now["in_scope"]:
        lines.append(f"in scope {before.get('in_scope')} -> {now['in_scope']}")
    if before.get("answered") != now["answered"]:
        lines.append(f"answered {before.get('answered')} -> {now['answered']} of {now['in_scope']}")
    moved = [
        f"{name} {before.get(key)} -> {now[key]}"
        for key, name in STATUS_NAMES
        if before.get(key) != now[key]
    ]
    if moved:
        lines.append("statuses moved: " + ", ".join(moved))
    if not lines and before.get("last_answer_at") != now["last_answer_at"]:
        lines.append("new answers given, the counts as they were (see the report page)")
    lines.extend(_grown(before, now))
    return lines


def _grown(before: AlertSnapshot, now: AlertSnapshot) -> list[str]:
    """The figures that are bad news when they grow: newly overdue,
    newly unreachable, more updates overdue; and when they shrink again."""
    lines = []
    for key, noun in (
        ("overdue", "overdue (no answer since the deadline)"),
        ("unreachable", "unreachable (every email bounced)"),
        ("overdue_updates", "with an update overdue"),
    ):
        was, is_ = int(before.get(key) or 0), int(now[key])
        if is_ > was:
            lines.append(f"{counted(is_ - was, 'more organisation')} {noun}, {is_} in all")
        elif is_ < was:
            lines.append(f"{counted(was - is_, 'fewer organisation')} {noun}, {is_} in all")
    return lines
