"""Rendering pages from ``templates/web/`` (found as the email templates are)."""

from __future__ import annotations

from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from mailflow.core.mail.templates import format_time, template_root
from mailflow.core.pages.security import CSRF_FIELD, csrf_token


def web_root() -> Path:
    return template_root() / "web"


@cache
def environment(zone_name: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(web_root()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    zone = ZoneInfo(zone_name)
    env.filters["local_time"] = lambda value: format_time(value, zone)
    env.filters["day"] = format_day
    return env


def format_day(value: date | datetime) -> str:
    return f"{value:%A} {value.day} {value:%B %Y}"


class Pages:
    def __init__(self, *, service_name: str, zone_name: str, help_email: str) -> None:
        self.service_name = service_name
        self.zone_name = zone_name
        self.help_email = help_email

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        values: dict[str, Any] = {
            "service_name": self.service_name,
            "help_email": self.help_email,
            "csrf_field": CSRF_FIELD,
            # Called by the templates that have a form, so only those pages
            # start a session (a mail scanner's visit to an error page does not).
            "csrf_token": lambda: csrf_token(request),
            "errors": {},
            "error_list": [],
        }
        values.update(context or {})
        html = environment(self.zone_name).get_template(name).render(values)
        return HTMLResponse(html, status_code=status_code, headers=headers)

    def problem(
        self,
        request: Request,
        status_code: int,
        title: str,
        message: str,
        *,
        details: list[str] | None = None,
        sign_out: bool = False,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        return self.render(
            request,
            "problem.html",
            {
                "title": title,
                "message": message,
                "details": details or [],
                "sign_out": sign_out,
            },
            status_code=status_code,
            headers=headers,
        )
