"""Signed tokens now live with the kinds of link in ``mailflow.core.links``;
these names stay importable from here for code written before the move."""

from mailflow.core.links import (
    MAX_CLOCK_SKEW,
    Purpose,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenService,
)

__all__ = [
    "MAX_CLOCK_SKEW",
    "Purpose",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenService",
]
