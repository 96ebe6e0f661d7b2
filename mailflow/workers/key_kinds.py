"""What a reply key can belong to: the one list the SMTP edge (at RCPT)
and the inbound job (to route a reply) both ask.  It lives in a shell
because it names capabilities: the gateway knows only the registry's type
(``gateway.routing.KeyKinds``) and is handed this list, so it imports no
capability that imports it back.  A new kind of key (an access request, a
conversation with an administrator) is one more line."""

from __future__ import annotations

from mailflow.access.decision_replies import AccessDecisionReplies
from mailflow.access.people_mailbox import PeopleMailbox, PeopleReplies
from mailflow.access.request_mailbox import AccessRequests
from mailflow.answers.alert_reply_key import DeliveryReplies
from mailflow.gateway.routing import KeyKinds

REPLY_KEY_KINDS = KeyKinds(
    (
        DeliveryReplies(),  # the Reply-To of an alert email
        AccessDecisionReplies(),  # the Reply-To of an access decision email
        PeopleReplies(),  # the Reply-To of an email to an administrator about their people
    ),
    mailboxes=(
        AccessRequests(),  # access@: REQUEST lines
        PeopleMailbox(),  # people@: administrators' people lines
    ),
)
