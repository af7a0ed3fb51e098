"""The load of bench/instructions.sh: claims s1 for alice, sets ENFORCED, then sends N checks
on one keep-alive connection, each answered 200. Usage: instructions.py BINARY PORT N (the
secret in GATEHOUSE_JWT_SECRET)."""

import http.client
import json
import os
import subprocess
import sys
import time

binary, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def tok(*args):
    env = {"GATEHOUSE_JWT_SECRET": os.environ["GATEHOUSE_JWT_SECRET"]}
    return subprocess.check_output([binary, "token", *args], env=env).decode().strip()


alice = tok("--sub", "alice")
admin = tok("--sub", "root", "--role", "admin")
backend = tok("--sub", "chat", "--scope", "gatehouse:claim")
for _ in range(600):  # valgrind starts slowly
    try:
        probe = http.client.HTTPConnection("127.0.0.1", port)
        probe.request("GET", "/healthz")
        probe.getresponse().read()
        break
    except OSError:
        time.sleep(0.1)


def call(conn, method, path, token, body):
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body), headers=headers)
    reply = conn.getresponse()
    reply.read()
    return reply.status


conn = http.client.HTTPConnection("127.0.0.1", port)
assert call(conn, "POST", "/v1/sessions/s1/claim", backend, {"user": "alice"}) in (200, 201)
assert call(conn, "PUT", "/v1/enforcement", admin, {"mode": "ENFORCED", "reason": "bench"}) == 200
for _ in range(n):
    assert call(conn, "POST", "/v1/validate", alice, {"session_id": "s1"}) == 200
