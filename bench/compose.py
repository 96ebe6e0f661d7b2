"""Composing one-off emails: "confirm your answer" requests and receipts,
written from prepared pieces (``compose_message``) against the same email
built whole with the email package (``build_message``), in the same run.

No database and no network: each email is rendered and given its headers
once (``one_off_email``, as ``send_one_off`` does), then each way of
composing is timed over the same list, alternately, ``--rounds`` times.
One recipient in ``--non-ascii-every`` has a name that needs encoding
(each name is different, so folded by the email package each time).
Per-email figures are microseconds of CPU time (``time.process_time``), so
other work on the machine weighs less; the ratio compares the two ways in
the same run.  It exits 1 if a composed email does not parse to the same
headers and bodies as the whole one.

    .venv/bin/python bench/compose.py                   # 2000 of each
    .venv/bin/python bench/compose.py --emails 500 --rounds 5
    .venv/bin/python bench/compose.py --profile         # + cProfile of compose_message
"""

from __future__ import annotations

import cProfile
import email
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default

from bench.common import ALERT, MAIL_DOMAIN, SECRET_KEY, USER_DOMAIN, make_parser
from mailflow.answers.reply_emails import AnswerLines
from mailflow.config import Settings, load_settings
from mailflow.core.mail.addresses import new_key
from mailflow.core.mail.messages import MessageHeaders, build_message, compose_message
from mailflow.core.mail.one_off import TheirMessage, ThreadHeaders, one_off_email
from mailflow.core.mail.skeleton import forget_folded_headers
from mailflow.core.mail.templates import RenderedEmail
from mailflow.core.models import Alert, User

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
Email = tuple[RenderedEmail, MessageHeaders]


def recipient(i: int, non_ascii_every: int) -> User:
    name = f"Zoë Ångström {i}" if non_ascii_every and i % non_ascii_every == 0 else f"Ann Lee {i}"
    return User(id=i + 1, name=name, email=f"r{i}@org{i % 200}.{USER_DOMAIN}")


def lines(i: int) -> list[AnswerLines]:
    due = [("Expected completion", "Friday 4 December 2026")] if i % 2 else []
    return [AnswerLines(f"Organisation {i % 200}", f"ORG{i % 200}", "In progress", due)]


def confirmations(settings: Settings, alert: Alert, n: int, non_ascii_every: int) -> list[Email]:
    return [
        one_off_email(
            settings,
            template="confirm",
            context={
                "recipient_name": (user := recipient(i, non_ascii_every)).name,
                "alert": alert,
                "link": f"https://{MAIL_DOMAIN}/c/{new_key()}",
                "expires_at": NOW + timedelta(hours=24),
                "answers": lines(i),
            },
            to=user,
            now=NOW,
            thread=ThreadHeaders(
                f"alert.{i}@{MAIL_DOMAIN}",
                TheirMessage(f"<reply.{i}@client.example>", new_key()),
            ),
        )
        for i in range(n)
    ]


def receipts(settings: Settings, alert: Alert, n: int, non_ascii_every: int) -> list[Email]:
    return [
        one_off_email(
            settings,
            template="receipt",
            context={
                "recipient_name": (user := recipient(i, non_ascii_every)).name,
                "for_answerer": i % 3 == 0,
                "answerer_name": "Raj Patel",
                "answerer_email": f"raj@{USER_DOMAIN}",
                "alert": alert,
                "lines": lines(i),
                "recorded_at": NOW,
                "within_deadline": True,
                "needs_update": i % 2 == 1,
            },
            to=user,
            now=NOW,
            thread=ThreadHeaders(f"alert.{i}@{MAIL_DOMAIN}"),
        )
        for i in range(n)
    ]


def whole(rendered: RenderedEmail, headers: MessageHeaders) -> bytes:
    return bytes(build_message(rendered, headers))


def cpu_per_email(
    compose: Callable[[RenderedEmail, MessageHeaders], bytes], emails: list[Email]
) -> float:
    start = time.process_time()
    for rendered, headers in emails:
        compose(rendered, headers)
    return (time.process_time() - start) / len(emails) * 1e6


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def same_email(a: bytes, b: bytes) -> bool:
    x, y = parsed(a), parsed(b)
    headers = [(k, str(v)) for k, v in x.items() if k != "Content-Type"]
    if headers != [(k, str(v)) for k, v in y.items() if k != "Content-Type"]:
        return False
    parts = [[(p.get_content_type(), p.get_content()) for p in m.iter_parts()] for m in (x, y)]
    return parts[0] == parts[1]


def measure(label: str, emails: list[Email], rounds: int) -> bool:
    pieces, full = [], []
    for _ in range(rounds):
        full.append(cpu_per_email(whole, emails))
        # As in a fresh process: headers the email package folded in an
        # earlier round are not remembered.
        forget_folded_headers()
        pieces.append(cpu_per_email(compose_message, emails))
    ratios = [f / p for f, p in zip(full, pieces, strict=True)]
    print(
        f"{label:<10} email package {statistics.median(full):7.0f} us/email"
        f" ({min(full):.0f}-{max(full):.0f}), pieces {statistics.median(pieces):6.0f} us/email"
        f" ({min(pieces):.0f}-{max(pieces):.0f}), {statistics.median(ratios):5.1f}x faster"
        f" ({min(ratios):.1f}-{max(ratios):.1f})"
    )
    return all(same_email(compose_message(*e), whole(*e)) for e in emails)


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--emails", type=int, default=2000, help="of each kind (default 2000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--non-ascii-every", type=int, default=10, help="0: none")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    settings = load_settings(
        environ={},
        overrides={
            "database_url": "sqlite://",
            "secret_key": SECRET_KEY,
            "mail_domain": MAIL_DOMAIN,
        },
    )
    alert = Alert(
        id=1, reference="CC-4720", title=str(ALERT["title"]), deadline_at=NOW + timedelta(hours=48)
    )
    kinds = {
        "confirm": confirmations(settings, alert, args.emails, args.non_ascii_every),
        "receipt": receipts(settings, alert, args.emails, args.non_ascii_every),
    }
    ok = all([measure(label, emails, args.rounds) for label, emails in kinds.items()])
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [compose_message(*e) for e in kinds["confirm"]])
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)
    if not ok:
        print("a composed email differs from the email package's", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
