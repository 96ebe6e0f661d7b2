"""The web pages: confirming answers with a second factor, and setting one up."""

from mailflow.web.app import create_app

__all__ = ["create_app"]
