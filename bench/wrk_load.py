"""Drive an HTTP endpoint with ``wrk`` from a file of pre-signed Slack requests.

Each slash command needs its own trigger_id and a Slack signature (an HMAC over
``v0:timestamp:body``, timestamp within 5 minutes), so nothing is signed in wrk: the
requests are written to a file, signed, and a Lua script (``SCRIPT``) sends them in
order, one each, and sorts the replies by what they say. Install wrk with
``apt-get install -y wrk`` (Debian, Ubuntu) or ``brew install wrk``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.devtools.driver import sign

INSTALL = "wrk is not installed: apt-get install -y wrk (Debian, Ubuntu) or brew install wrk"
# The reply texts a bench tells apart; a reply matching none of them is "other".
REPLIES = (("deploy", "is on its way"), ("status", "What runs where"),
           ("invalid", "Unknown service"), ("busy", "is busy"),
           ("replayed", "Already received"))
SCRIPT = r"""
local requests = {}
sent, replies, pool = 0, {}, 0  -- globals: done() reads them with thread:get
local kinds = {%(kinds)s}

init = function(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local ts, signature, body = line:match("^(%%S+)\t(%%S+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", args[2], {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Slack-Request-Timestamp"] = ts, ["X-Slack-Signature"] = signature}, body)
  end
  file:close()
  pool = #requests
end

request = function()
  sent = sent + 1
  return requests[(sent - 1) %% #requests + 1]
end

response = function(status, headers, body)
  local kind = "other"
  if status ~= 200 then
    kind = "http " .. status
  else
    for _, pair in ipairs(kinds) do
      if body:find(pair[2], 1, true) then kind = pair[1] break end
    end
  end
  replies[kind] = (replies[kind] or 0) + 1
end

local threads = {}
setup = function(thread) threads[#threads + 1] = thread end

done = function(summary, latency, _)
  local counts, total, wrapped = {}, 0, 0
  for _, thread in ipairs(threads) do
    for kind, n in pairs(thread:get("replies")) do counts[kind] = (counts[kind] or 0) + n end
    wrapped = wrapped + math.max(0, thread:get("sent") - thread:get("pool"))
  end
  local parts = {}
  for kind, n in pairs(counts) do parts[#parts + 1] = string.format('"%%s": %%d', kind, n) end
  local e = summary.errors
  io.write(string.format('\nEDGE-RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, '
    .. '"p99_us": %%d, "max_us": %%d, "errors": %%d, "wrapped": %%d, "replies": {%%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout, wrapped,
    table.concat(parts, ", ")))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # connect, read, write errors and timeouts (never in the latencies)
    wrapped: int  # requests sent a second time because the file ran out (replays)
    replies: dict[str, int]


def script() -> str:
    kinds = ", ".join(f'{{"{kind}", "{text}"}}' for kind, text in REPLIES)
    return SCRIPT % {"kinds": kinds}


def write_requests(path: Path, secret: str, bodies: Sequence[str]) -> None:
    """One line per request: timestamp, signature, url-encoded body (no tabs in it)."""
    with path.open("w") as out:
        for body in bodies:
            headers = sign(secret, body)
            out.write(f"{headers['X-Slack-Request-Timestamp']}\t"
                      f"{headers['X-Slack-Signature']}\t{body}\n")


def run_wrk(url: str, requests_file: Path, workdir: Path, *, seconds: float,
            connections: int, timeout: float = 5.0) -> WrkResult:
    """wrk with one thread (it needs a fraction of a core) for ``seconds``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit(INSTALL)
    lua = workdir / "signed.lua"
    lua.write_text(script())
    base, _, path = url.partition("//")[2].partition("/")
    argv = [wrk, "-t1", f"-c{connections}", f"-d{round(seconds)}s", f"--timeout={timeout:g}s",
            "-s", str(lua), f"http://{base}", "--", str(requests_file), f"/{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("EDGE-RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk ({out.returncode}) printed no result:\n{out.stdout}\n"
                           f"{out.stderr}")
    data = json.loads(line.removeprefix("EDGE-RESULT "))
    return WrkResult(requests=data["requests"], seconds=data["duration_us"] / 1e6,
                     p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                     max_ms=data["max_us"] / 1000, errors=data["errors"],
                     wrapped=data["wrapped"], replies=data["replies"])
