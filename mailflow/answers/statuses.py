"""The remediation statuses an organisation can record for an alert."""

from __future__ import annotations

import enum


class AnswerStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    NOT_APPLICABLE = "not_applicable"
    UNABLE = "unable"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def guidance(self) -> str:
        """What further information goes with this status."""
        return _GUIDANCE[self]


_LABELS = {
    AnswerStatus.IN_PROGRESS: "In progress",
    AnswerStatus.COMPLETE: "Complete",
    AnswerStatus.NOT_APPLICABLE: "Not applicable",
    AnswerStatus.UNABLE: "Unable to implement",
}

_GUIDANCE = {
    AnswerStatus.IN_PROGRESS: "optional: the date you expect to finish",
    AnswerStatus.COMPLETE: "optional: a note",
    AnswerStatus.NOT_APPLICABLE: "required: why it does not apply",
    AnswerStatus.UNABLE: "required: why, and the mitigations in place",
}
