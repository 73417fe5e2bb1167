"""Mail sent as notification handlers send it: a MIME message with an HTML alternative
and an attachment built with email.message, handed to smtplib against a small SMTP
server in a thread (EHLO, AUTH PLAIN, MAIL, RCPT, DATA), and the delivered bytes parsed
back with email's default policy."""

import base64
import email
import email.policy
import smtplib
import socketserver
import threading
from email.message import EmailMessage

DELIVERED = []


class Smtp(socketserver.StreamRequestHandler):
    def say(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.say("220 corpus ESMTP")
        envelope = {"rcpt": []}
        while line := self.rfile.readline():
            verb, _, arg = line.decode().strip().partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.wfile.write(b"250-corpus\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
            elif verb == "AUTH":
                user = base64.b64decode(arg.split()[1]).split(b"\0")[1].decode()
                envelope["user"] = user
                self.say("235 ok")
            elif verb == "MAIL":
                envelope["from"] = arg
                self.say("250 ok")
            elif verb == "RCPT":
                envelope["rcpt"].append(arg)
                self.say("250 ok")
            elif verb == "DATA":
                self.say("354 go on")
                body = b""
                while (data := self.rfile.readline()) != b".\r\n":
                    body += data[1:] if data.startswith(b"..") else data
                DELIVERED.append((envelope, body))
                self.say("250 queued")
            elif verb == "QUIT":
                self.say("221 bye")
                return
            else:
                self.say("502 no")


def message(event):
    msg = EmailMessage()
    msg["Subject"] = f"Report for {event['day']} ✓"
    msg["From"] = "etl@example.org"
    msg["To"] = ", ".join(event["to"])
    msg.set_content(f"Rows processed: {event['rows']}\n.\nA line starting with a dot.\n")
    msg.add_alternative(f"<p>Rows processed: <b>{event['rows']}</b></p>", subtype="html")
    msg.add_attachment(("day,rows\n" + f"{event['day']},{event['rows']}\n").encode(),
                       maintype="text", subtype="csv", filename="report.csv")
    return msg


def handler(event, context):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Smtp)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.server_address[1], timeout=30) as smtp:
            smtp.ehlo("handler")
            features = sorted(smtp.esmtp_features)
            smtp.login("etl", "password")
            refused = smtp.send_message(message(event))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)
    envelope, raw = DELIVERED[-1]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    attachment = next(parsed.iter_attachments())
    return {"features": features, "refused": refused, "envelope": envelope,
            "subject": parsed["Subject"], "to": [a.addr_spec for a in parsed["To"].addresses],
            "plain": parsed.get_body(("plain",)).get_content().splitlines(),
            "html": "<b>" in parsed.get_body(("html",)).get_content(),
            "attachment": [attachment.get_filename(), attachment.get_content()]}
