#!/usr/bin/env python3
"""converse.py -- many conversations against `flowrun serve` (or a load balancer
in front of several), the way a chat platform delivers them: one
POST /webhooks/rest {"sender", "message", "number"} per user message.

    python3 scripts/converse.py URL [options] < conversations.jsonl

Each input line is one conversation: {"sender": "c1", "messages": ["bob", "42",
"yes"]}; the first message starts it. Conversations run CONCURRENCY at a time
(with --total S, none starts after S seconds), each one message after the
other: message k is sent with "number": k. A
webhook that fails (no connection, a reset, a 5xx from the load balancer, a 409
while its host still answers an earlier try), or that answers an empty array
when a long poll (GET /webhooks/rest/messages?sender=ID&wait=S) then finds
nothing either, is sent again, the SAME message and number, after BACKOFF ms,
until DEADLINE seconds after the conversation started. A repeated number is
not taken twice by the server and is answered again, so a retry never changes
the conversation; the answer of the last try is the turn's. With --no-number
the key is left out (a server that does not know it); a retry may then deliver
the message twice, so an empty answer is followed by long polls until the
deadline instead of a new try.
A bot message with a "seq" (a server with a store numbers them in the
session) whose seq the conversation has seen is dropped, as a chat platform
would: after a takeover a message may be given again.

Output, one JSON line per conversation as it ends, in the order they end:
{"sender", "completed", "transcript": [every bot text, in order], "turns":
[[texts of message 1], ...], "tries" (webhooks sent), "again" (messages
dropped as seen), "seconds", "error"
(why it did not complete, when it did not)}; then one summary line:
{"summary": true, "conversations", "completed", "seconds",
"conversations_per_s", "messages" (answered), "retries" (webhooks sent beyond
one per answered message), "again", "statuses": {"200": n, "502": n, "connection": n,
"poll 200": n, ...}}. Exit status 0 when every conversation completed, 1
when one did not, 2 for bad arguments or input. Standard library only.
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


def parse_args(argv):
    p = argparse.ArgumentParser(prog="converse.py", description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--concurrency", "-c", type=int, default=50,
                   help="conversations at once (50)")
    p.add_argument("--deadline", type=float, default=60.0,
                   help="seconds a conversation may take, retries included (60)")
    p.add_argument("--total", type=float, default=None,
                   help="seconds the whole run may take: conversations not done by then fail")
    p.add_argument("--backoff", type=float, default=100.0,
                   help="ms before a try is repeated (100; doubled each time up to 1 s)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds one request may take (10)")
    p.add_argument("--poll-wait", type=int, default=1,
                   help="wait=S of the long poll after an empty answer (1)")
    p.add_argument("--no-number", action="store_true",
                   help="leave \"number\" out of the webhook body")
    p.add_argument("--token", default=None, help="bearer token for the webhook")
    a = p.parse_args(argv)
    if a.concurrency < 1 or a.deadline <= 0 or a.backoff < 0 or a.timeout <= 0:
        p.error("--concurrency, --deadline and --timeout must be > 0, --backoff >= 0")
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or not u.hostname:
        p.error("URL: expected http://HOST:PORT, got %r" % a.url)
    a.host, a.port, a.prefix = u.hostname, u.port or 80, u.path.rstrip("/")
    return a


def die(msg):
    """Bad input: the message on stderr, exit status 2."""
    sys.stderr.write("converse.py: " + msg + "\n")
    sys.exit(2)


def read_conversations(stream):
    """The conversations of the input, checked: a clear message for a bad line."""
    out, seen = [], set()
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            c = json.loads(line)
        except ValueError as e:
            die("input line %d: not JSON: %s" % (n, e))
        if not isinstance(c, dict) or not isinstance(c.get("sender"), str) or not c["sender"] \
                or not isinstance(c.get("messages"), list) or not c["messages"] \
                or not all(isinstance(m, str) for m in c["messages"]):
            die("input line %d: expected {\"sender\": ID, \"messages\": [TEXT, ...]}" % n)
        if c["sender"] in seen:
            die("input line %d: sender %r twice" % (n, c["sender"]))
        seen.add(c["sender"])
        out.append(c)
    return out


class Client:
    """One keep-alive connection of a worker; a new one after any failure."""

    def __init__(self, args):
        self.args = args
        self.conn = None

    def request(self, method, path, body=None):
        """(status, body bytes), or (None, reason) when the request failed."""
        a = self.args
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if a.token:
            headers["Authorization"] = "Bearer " + a.token
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
            self.conn.request(method, a.prefix + path, body=body, headers=headers)
            r = self.conn.getresponse()
            data = r.read()
            if r.getheader("Connection", "").lower() == "close":
                self.close()
            return r.status, data
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return None, type(e).__name__

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = {}
        self.tries = 0

    def count(self, status, poll=False):
        key = "connection" if status is None else str(status)
        if poll:
            key = "poll " + key
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if not poll:
                self.tries += 1


def texts_of(body, sender, seen):
    """The texts of a Rasa answer for sender, or None when it is not one. A
    message with a "seq" (a server with a store) already in seen was given
    before (after a takeover): it is dropped, and counted in seen["again"]."""
    try:
        msgs = json.loads(body)
    except ValueError:
        return None
    if not isinstance(msgs, list):
        return None
    out = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("recipient_id") != sender or "text" not in m:
            return None
        seq = m.get("seq")
        if seq is not None:
            if seq in seen:
                seen["again"] = seen.get("again", 0) + 1
                continue
            seen[seq] = True
        out.append(m["text"])
    return out


def converse(client, conv, args, stats, end):
    """Runs one conversation (until its deadline, or end: --total); returns
    its output record."""
    sender = conv["sender"]
    t0 = time.monotonic()
    deadline = min(t0 + args.deadline, end)
    turns, tries, error, seen = [], 0, None, {}
    if t0 >= end:
        return {"sender": sender, "completed": False, "transcript": [], "turns": [], "tries": 0,
                "seconds": 0, "error": "not started: --total %g s had passed" % args.total}
    poll = "/webhooks/rest/messages?sender=%s&wait=%d" % (urllib.parse.quote(sender, safe=""),
                                                         args.poll_wait)
    for k, message in enumerate(conv["messages"], 1):
        body = {"sender": sender, "message": message}
        if not args.no_number:
            body["number"] = k
        payload = json.dumps(body).encode()
        backoff = args.backoff / 1000.0
        turn = None
        while turn is None:
            tries += 1
            status, data = client.request("POST", "/webhooks/rest", payload)
            stats.count(status)
            if status == 200:
                got = texts_of(data, sender, seen)
                if got is None:
                    error = "message %d: not a Rasa answer: %r" % (k, data[:200])
                    break
                if got:
                    turn = got
                    break
                # what came later, or was made and not given before a restart,
                # waits for the long poll; without a number a new try could
                # deliver the message twice: only the poll then
                while True:
                    status, data = client.request("GET", poll)
                    stats.count(status, poll=True)
                    got = (texts_of(data, sender, seen) if status == 200 else None) or []
                    if got or not args.no_number or time.monotonic() >= deadline:
                        break
                if got:
                    turn = got
                    break
            elif status is not None and 400 <= status < 500 and status != 409:
                error = "message %d: %d %s" % (k, status, data[:200].decode("utf-8", "replace"))
                break
            if time.monotonic() + backoff > deadline:
                error = "message %d: no answer within --deadline %g s or --total (last: %s)" % (
                    k, args.deadline, "connection " + str(data) if status is None else status)
                break
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
        if turn is None:
            break
        turns.append(turn)
    transcript = [t for turn in turns for t in turn]
    rec = {"sender": sender, "completed": error is None, "transcript": transcript,
           "turns": turns, "tries": tries, "again": seen.get("again", 0),
           "seconds": round(time.monotonic() - t0, 4)}
    if error:
        rec["error"] = error
    return rec


def main(argv):
    args = parse_args(argv)
    convs = read_conversations(sys.stdin)
    stats = Stats()
    out_lock = threading.Lock()
    results = []
    nxt = [0]

    def worker():
        client = Client(args)
        while True:
            with out_lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(convs):
                break
            rec = converse(client, convs[i], args, stats, end)
            line = json.dumps(rec, ensure_ascii=False)
            with out_lock:
                results.append(rec)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        client.close()

    t0 = time.monotonic()
    end = t0 + args.total if args.total else float("inf")
    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(min(args.concurrency, max(1, len(convs))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    done = sum(1 for r in results if r["completed"])
    answered = sum(len(r["turns"]) for r in results)
    summary = {"summary": True, "conversations": len(convs), "completed": done,
               "seconds": round(secs, 4),
               "conversations_per_s": round(done / secs, 2) if secs > 0 else 0,
               "messages": answered, "retries": stats.tries - answered,
               "again": sum(r.get("again", 0) for r in results),
               "statuses": stats.statuses}
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0 if done == len(convs) else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
