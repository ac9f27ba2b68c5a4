"""The SQL limits of `runql serve`, against a real server started with small ones (see
shell/tests/it/hostile.rs: `--sql-timeout 3 --sql-memory-mb 256 --sql-max-result-mb 64`). No
browser: plain HTTP, and the server's /proc entries for its memory and CPU time.

Usage: limits.py RUNQL_URL SERVER_PID

Checks that
  - a cross join of 200,000 x 200,000 rows answers an error (a timeout) within 10 s, and then
    stops using CPU;
  - `SELECT value FROM generate_series(1, 400000000)` (3.2 GB of values) answers an error naming
    the memory or result-size limit while the server's resident memory (VmRSS) stays under
    1.5 GiB, and /health answers afterwards;
  - a client that sends the cross join and disconnects after 1 s leaves the server idle: after
    1 s of grace it uses under 0.5 s of CPU in the next 3 s (the query is cancelled when its
    client goes, not left running until its timeout), and /health and a small query answer
    at the end.
Before the second and third, it waits (up to 60 s, and says so) for the server to be idle, so
that what one check left running does not count against the next. With the result limit at its
default (256 MiB), an unoptimised build may meet the 3 s timeout first in the second check.
Prints one line per check with what it measured; exits 1 listing every failure.
"""

import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

URL = sys.argv[1].rstrip("/")
PID = int(sys.argv[2])
TICK = os.sysconf("SC_CLK_TCK")
CROSS_JOIN = "SELECT count(*) FROM generate_series(1,200000) a, generate_series(1,200000) b"
HUGE = "SELECT value FROM generate_series(1, 400000000)"
RSS_LIMIT_MIB = 1536
failures = []


def check(name, ok, detail=""):
    line = f"{'ok' if ok else 'FAILED'}: {name}" + (f" ({detail})" if detail else "")
    print(line, flush=True)
    if not ok:
        failures.append(line)
    return ok


def rss_mib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {PID}")


def cpu_s():
    """The server's CPU time so far (user + system), in seconds."""
    with open(f"/proc/{PID}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sql(q, timeout=120):
    """(status, message or body, seconds) of a plain POST /api/sql."""
    req = urllib.request.Request(
        URL + "/api/sql",
        data=json.dumps({"sql": q}).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except Exception as e:  # a dropped connection, a client timeout
        return None, f"{type(e).__name__}: {e}", time.monotonic() - start
    elapsed = time.monotonic() - start
    text = body[:100_000].decode(errors="replace")
    try:
        text = json.loads(text).get("message", text)
    except (ValueError, AttributeError):
        pass
    return status, text, elapsed


def health():
    try:
        with urllib.request.urlopen(URL + "/health", timeout=5) as r:
            return r.status, r.read().decode()
    except Exception as e:
        return None, str(e)


def kind(status, message):
    m = (message or "").lower()
    if status == 413 or "larger than" in m or "result" in m and "limit" in m:
        return "result size"
    if "memory" in m or "resources exhausted" in m:
        return "memory"
    if status == 408 or "longer than" in m or "timeout" in m or "timed out" in m:
        return "timeout"
    return "other"


def idle(seconds):
    c = cpu_s()
    time.sleep(seconds)
    return cpu_s() - c


def settle(what, longest=60):
    """Waits until the server is idle (under 0.1 s CPU in 0.5 s), so that what an earlier
    check left running does not count against the next one; says how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < longest:
        if idle(0.5) < 0.1:
            waited = time.monotonic() - start
            if waited > 1:
                print(f"  (the server was busy for {waited:.1f} s more before {what})")
            return True
    check(f"the server goes idle before {what}", False, f"still busy after {longest} s")
    return False


status, text = health()
if status != 200:
    sys.exit(f"limits: {URL}/health answered {status}: {text}")
print(f"limits: {URL} (pid {PID}): {rss_mib():.0f} MiB resident, {idle(1):.2f} s CPU in 1 s idle")

# 1. A query that runs too long is stopped, and answers so.
c0 = cpu_s()
status, message, elapsed = sql(CROSS_JOIN, timeout=30)
used = cpu_s() - c0
check(
    "the 200,000 x 200,000 cross join answers an error within 10 s",
    status is not None and status >= 400 and elapsed < 10 and bool(message),
    f"answered {status} after {elapsed:.2f} s: {message!r}; {used:.2f} s CPU while it ran",
)
check("... naming the timeout", kind(status, message) == "timeout", f"{kind(status, message)}: {message!r}")
time.sleep(0.5)
after = idle(2)
check(
    "... and the stopped query uses no more CPU (under 0.5 s in the 2 s after its answer)",
    after < 0.5,
    f"{after:.2f} s CPU",
)

# 2. A query whose answer would be 3.2 GB answers an error, the server's memory bounded.
settle("the 400,000,000-row query")
peak = [rss_mib()]
base = peak[0]
done = threading.Event()


def sample():
    while not done.is_set():
        try:
            peak[0] = max(peak[0], rss_mib())
        except Exception:
            return
        time.sleep(0.02)


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
status, message, elapsed = sql(HUGE)
done.set()
sampler.join()
check(
    "SELECT value FROM generate_series(1, 400000000) answers an error",
    status is not None and status >= 400 and bool(message),
    f"answered {status} after {elapsed:.2f} s: {message[:300]!r}",
)
check(
    "... naming the memory or result-size limit",
    kind(status, message) in ("memory", "result size"),
    f"{kind(status, message)}: {message[:300]!r}",
)
check(
    f"... while the server stays under {RSS_LIMIT_MIB} MiB resident",
    peak[0] < RSS_LIMIT_MIB,
    f"peak VmRSS {peak[0]:.0f} MiB, {base:.0f} MiB before",
)
status, text = health()
check("/health answers afterwards", status == 200, f"answered {status}: {text[:100]!r}")

# 3. A client that goes away takes its query with it.
settle("the disconnecting client")
quiet = idle(1)
host, port = urllib.parse.urlparse(URL).hostname, urllib.parse.urlparse(URL).port
body = json.dumps({"sql": CROSS_JOIN}).encode()
s = socket.create_connection((host, port))
s.sendall(
    (
        f"POST /api/sql HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    + body
)
c0 = cpu_s()
time.sleep(1)
running = cpu_s() - c0
s.close()
time.sleep(1)  # grace
c1 = cpu_s()
time.sleep(3)
left = cpu_s() - c1
detail = (
    f"{quiet:.2f} s CPU in 1 s before it; {running:.2f} s in the query's first second; "
    f"{left:.2f} s in the 3 s after 1 s of grace once the client disconnected"
)
if running < 0.2:
    check("a query whose client disconnects is cancelled (inconclusive: it did not seem to run)", False, detail)
else:
    check("a query whose client disconnects is cancelled (under 0.5 s CPU in 3 s)", left < 0.5, detail)
status, text = health()
check("/health answers at the end", status == 200, f"answered {status}: {text[:100]!r}")
status, message, _ = sql("SELECT 1 AS one")
check("a small query answers at the end", status == 200, f"answered {status}: {message[:100]!r}")

if failures:
    print(f"\nlimits: {len(failures)} checks failed:", file=sys.stderr)
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("limits: every check passed")
