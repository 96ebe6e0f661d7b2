"""Setting up an authenticator app from a welcome email's link, seen from
what a browser holds: the secret being set up is shown on the page and
kept in the database, never in the (signed, readable) session cookie."""

from __future__ import annotations

import json
import re

import pyotp

from mailflow.core.second_factor import mfa
from mailflow.people.welcome_email import enrolment_link
from tests.support.pages import Web, post_form, read_session_cookie, user_id


def shown_secret(html: str) -> str:
    found = re.search(r'id="secret">([A-Z2-7 ]+)<', html)
    assert found, "the page shows no key"
    return found.group(1).replace(" ", "")


def test_the_secret_being_set_up_never_travels_in_the_session_cookie(web: Web) -> None:
    ann = user_id(web.db(), "ann@riverside.example")
    path = enrolment_link(web.settings, ann).removeprefix(web.settings.base_url)

    scan = post_form(web.client, path, {"action": "start"})
    secret = shown_secret(scan.text)
    cookie = json.dumps(read_session_cookie(web.settings, web.client))

    assert scan.status_code == 200
    assert secret not in cookie and secret.lower() not in cookie
    assert "secret" not in cookie

    # A wrong first code shows the same key again, still from the database.
    wrong = (int(pyotp.TOTP(secret).now()) + 1) % 1_000_000
    again = post_form(web.client, path, {"action": "finish", "code": f"{wrong:06d}"})
    assert again.status_code == 400
    assert shown_secret(again.text) == secret
    assert secret not in json.dumps(read_session_cookie(web.settings, web.client))

    done = post_form(web.client, path, {"action": "finish", "code": pyotp.TOTP(secret).now()})
    assert "Keep your recovery codes" in done.text
    assert mfa.is_enrolled(web.db(), ann)
