"""An inbound-mail handler (SES or SendGrid's inbound parse): a multipart MIME message with
an encoded subject, a text and an HTML alternative and attachments built with the stdlib's
email package, then parsed with policy.default: addresses, headers, parts, attachments."""

import email
import hashlib
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr


def compose(n):
    msg = EmailMessage()
    msg["From"] = "Zoë Müller <zoe@example.org>"
    msg["To"] = "orders@example.com, Bob <bob@example.net>"
    msg["Subject"] = "Rechnung Nr. 42 – fällig"
    msg["Date"] = format_datetime(datetime(2024, 5, 1, 9, 30, tzinfo=UTC))
    msg["Message-ID"] = make_msgid(idstring="corpus", domain="example.org")
    msg.set_content("Hallo,\nanbei die Rechnung.\n" * 3)
    msg.add_alternative("<p>Hallo,<br>anbei die <b>Rechnung</b>.</p>", subtype="html")
    for i in range(n):
        msg.add_attachment(bytes(range(256)) * (i + 1), maintype="application",
                           subtype="octet-stream", filename=f"anhang-{i}.bin")
    msg.add_attachment("a,b\n1,2\n", subtype="csv", filename="daten.csv")
    return msg.as_bytes()


def handler(event, context):
    raw = compose(event["attachments"])
    msg = email.message_from_bytes(raw, policy=policy.default)
    body = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    attachments = [{"name": p.get_filename(), "type": p.get_content_type(),
                    "sha1": hashlib.sha1(p.get_content() if isinstance(p.get_content(), bytes)
                                         else p.get_content().encode()).hexdigest()}
                   for p in msg.iter_attachments()]
    return {"from": parseaddr(str(msg["From"])),
            "to": [(a.display_name, a.addr_spec) for a in msg["To"].addresses],
            "subject": str(msg["Subject"]), "date": msg["Date"].datetime.isoformat(),
            "encoded_subject": b"=?utf-8?" in raw, "text": body.get_content().splitlines()[0],
            "html_type": html.get_content_type(), "attachments": attachments,
            "parts": [p.get_content_type() for p in msg.walk()],
            "msgid_domain": str(msg["Message-ID"]).rsplit("@", 1)[1]}
