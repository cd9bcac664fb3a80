#!/usr/bin/env python3
"""An SMTP sink for the integration tests (tests/it/smtp.rs).

    python3 tests/smtp/sink.py DIR [--fail N]

Listens on 127.0.0.1, on a port the system picks, and prints that port as the first line of
stdout. Each message it accepts is stored as DIR/<n>.eml (n = 0, 1, ...) and then, parsed, as
DIR/<n>.json: {"mail_from", "rcpt_to", "from", "to", "subject", "text", "html"}; the JSON file
appears whole (written aside, then renamed), so a reader that sees it can read it. With
--fail N the first N messages are answered `451` at DATA (a transient failure), to test retries.
Runs until killed.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory, fail):
        self.directory = directory
        self.fail = fail
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if self.fail > 0:
            self.fail -= 1
            return "451 4.3.0 try again later (test sink)"
        n = self.count
        self.count += 1
        raw = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        with open(os.path.join(self.directory, f"{n}.eml"), "wb") as f:
            f.write(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)

        def part(kind):
            body = msg.get_body(preferencelist=(kind,))
            return body.get_content() if body is not None else None

        parsed = {
            "mail_from": envelope.mail_from,
            "rcpt_to": list(envelope.rcpt_tos),
            "from": str(msg["From"] or ""),
            "to": str(msg["To"] or ""),
            "subject": str(msg["Subject"] or ""),
            "content_type": msg.get_content_type(),
            "text": part("plain"),
            "html": part("html"),
        }
        tmp = os.path.join(self.directory, f".{n}.json.tmp")
        with open(tmp, "w") as f:
            json.dump(parsed, f)
        os.rename(tmp, os.path.join(self.directory, f"{n}.json"))
        return "250 OK"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--fail", type=int, default=0)
    args = parser.parse_args()
    sink = Sink(args.dir, args.fail)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.test"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
