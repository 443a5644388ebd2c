"""The HAProxy configuration the controller writes (no I/O here): one public frontend that sends
``/fn/<name>/…`` straight to the function's backend when it is safe to, and everything else to
the controller's own HTTP app on a loopback port.

What is safe to send straight: the function has ready servers (its name is in the functions map,
which the controller fills only then) and the request carries the token in the one exact form
``Authorization: Bearer <token>`` (one header). Anything else (another spelling the controller may
still accept, a wrong or missing token, an unknown or cold function, the API and the UI) goes to
the controller, which answers as it does without HAProxy: errors, holding while a function scales
up from zero, and auth stay in one place. The config holds a SHA-256 of the header, not the token.

Functions get backends from a fixed pool of slots (``fn_0`` … ``fn_<n-1>``), and replicas are
dynamic servers in them (runtime API), so nothing is reloaded while the controller runs; a
function beyond the pool stays on the Python gateway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .trust import CLIENT_HEADER, SECRET_HEADER

# X-Request-Id as functions/requestid.py accepts it (else HAProxy mints one).
SAFE_ID = r"^[A-Za-z0-9._:-]{1,128}$"
SLOT_PREFIX = "fn_"
# A Connection header value with a token other than keep-alive/close.
CONN_NAMES = r"(^|,)\s*(?!(keep-alive|close)\s*(,|$))[^\s,]"
CONTROLLER_BACKEND = "controller"
PRESSURE_PER_SOURCE = 8
# HAProxy sends header names in lower case (HTTP says case does not matter); clients that read
# them case-sensitively (a dict of response headers) get these, the controller's and the common
# ones, spelled as the controller and the Python gateway send them.
CASE_ADJUST = (
    "Accept-Ranges",
    "Access-Control-Allow-Headers",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Origin",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
    "Allow",
    "Cache-Control",
    "Connection",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Security-Policy",
    "Content-Type",
    "Date",
    "ETag",
    "Expires",
    "Keep-Alive",
    "Last-Modified",
    "Location",
    "Referrer-Policy",
    "Retry-After",
    "Server",
    "Set-Cookie",
    "Transfer-Encoding",
    "Vary",
    "WWW-Authenticate",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-Request-Id",
    "X-Tickrun-Log",
)
# What HAProxy logs (stderr, read by front.py): only requests that ended abnormally (a request it
# could not parse, a timeout, an abort), as the status and termination state: never a header,
# so never the token.
LOG_TAG = "tickrun-front"
LOG_FORMAT = f"{LOG_TAG} status=%ST term=%tsc client=%ci"
# Requests may legitimately take long (log follow, holding while a function scales up, slow
# handlers): the Python gateway has no read deadline toward replicas either.
SERVER_TIMEOUT_S = 3600
# Errors HAProxy answers itself, in the controller API's error shape (no HTML, no version).
ERRORS = {
    400: ("BadRequest", "malformed HTTP request"),
    403: ("Forbidden", "request refused"),
    408: ("RequestTimeout", "the request was not received in time"),
    500: ("InternalError", "internal error; see the controller log"),
    502: ("BadGateway", "the replica broke off the exchange"),
    503: ("NoReadyReplica", "no replica answered; try again shortly"),
    504: ("GatewayTimeout", "the replica did not answer in time"),
}


@dataclass(frozen=True)
class ProxyConfig:
    """What the config is made of (all known before HAProxy starts)."""

    public_fd: int  # the public listening socket, bound by the controller and inherited
    internal_port: int  # the controller's aiohttp app on 127.0.0.1
    stats_socket: str
    functions_map: str
    token: str | None  # None: /fn/ is public (TICKRUN_PUBLIC_GATEWAY)
    max_connections: int
    header_timeout_s: float
    keepalive_timeout_s: float
    body_timeout_s: float
    front_secret: str = ""  # sent to the controller with the client's address (trust.py)
    slots: int = 128
    stop_timeout_s: float = 10.0


def per_source_limit(max_connections: int) -> int:
    """Connections one client address (an IPv6 /64) may hold at once.

    HAProxy cannot evict an idle or half-open connection to make room at the cap as the Python
    edge does (controller/edge.py): instead one address may hold only a quarter of the budget,
    so a slow or idle flood from one address never takes the slots a fresh client needs. (A
    flood from many addresses that fills the cap makes new clients wait for the head deadline.)
    """
    return max(max_connections // 4, 1)


def pressure_limits(max_connections: int) -> tuple[int, int]:
    """Past three quarters of the budget, an address already holding this many connections
    gets no more: a flood from a few addresses cannot take the last slots, fresh clients can."""
    return max(max_connections * 3 // 4, 1), PRESSURE_PER_SOURCE


def token_digest(token: str) -> str:
    """SHA-256 (hex) of the Authorization header value HAProxy lets straight through."""
    return hashlib.sha256(f"Bearer {token}".encode("utf-8", "surrogateescape")).hexdigest()


def slot_backend(slot: int) -> str:
    return f"{SLOT_PREFIX}{slot}"


def _ms(seconds: float) -> str:
    return f"{max(int(seconds * 1000), 1)}ms"


def _error_lines() -> list[str]:
    lines = []
    for status, (error, detail) in ERRORS.items():
        body = '{"error":"%s","detail":"%s"}' % (error, detail)  # noqa: UP031 - JSON braces
        lines.append(
            f"    http-error status {status} content-type application/json string '{body}'"
        )
    return lines


def render(cfg: ProxyConfig) -> str:
    check = "fn_path fn_mapped" if cfg.token is None else "fn_path tok_one tok_ok fn_mapped"
    check += " !conn_names"
    # Decided once: the rules below change what the ACLs look at (the header, the path).
    fast = "fast"
    digest = token_digest(cfg.token or "")
    lookup = f"path,field(3,/),map_str({cfg.functions_map})"
    high_water, under_pressure = pressure_limits(cfg.max_connections)
    lines = [
        "global",
        f"    maxconn {cfg.max_connections}",
        # One thread: on a small machine the other core serves the replicas and the controller.
        "    nbthread 1",
        "    log stderr format raw local0 info",
        *(f"    h1-case-adjust {name.lower()} {name}" for name in CASE_ADJUST),
        f"    stats socket {cfg.stats_socket} mode 600 level admin",
        f"    hard-stop-after {_ms(cfg.stop_timeout_s)}",
        "",
        "defaults",
        "    mode http",
        "    option http-keep-alive",
        "    log global",
        "    option dontlog-normal",
        "    option dontlognull",
        f'    log-format "{LOG_FORMAT}"',
        "    timeout connect 2s",
        # The hardened edge's deadlines (controller/edge.py), now HAProxy's: a slow request head
        # (slowloris), an idle keep-alive connection, a stalled body.
        f"    timeout http-request {_ms(cfg.header_timeout_s)}",
        f"    timeout http-keep-alive {_ms(cfg.keepalive_timeout_s)}",
        f"    timeout client {_ms(cfg.body_timeout_s)}",
        f"    timeout server {SERVER_TIMEOUT_S}s",
        f"    timeout tunnel {SERVER_TIMEOUT_S}s",
        # Errors of a request under way (no replica answered, a timeout); a request HAProxy
        # cannot parse at all gets its built-in short HTML 400 page (2.6 has no hook for that
        # one; errorfile and http-error are not used by its HTTP/1 parser), and the controller's
        # log one "malformed request" line (front.py reads HAProxy's log line).
        *_error_lines(),
        "",
        "frontend public",
        f"    bind fd@{cfg.public_fd}",
        f"    maxconn {cfg.max_connections}",
        "    option h1-case-adjust-bogus-client",
        # One address's share of the connections (see per_source_limit); an IPv6 /64 is one.
        "    stick-table type ipv6 size 100k expire 60s store conn_cur",
        "    tcp-request connection track-sc0 src,ipmask(32,64)",
        "    tcp-request connection reject if { sc0_conn_cur gt "
        f"{per_source_limit(cfg.max_connections)} }}",
        f"    tcp-request connection reject if {{ fe_conn ge {high_water} }} "
        f"{{ sc0_conn_cur gt {under_pressure} }}",
        "    acl fn_path path_beg /fn/",
        "    acl tok_one req.fhdr_cnt(authorization) eq 1",
        f"    acl tok_ok req.fhdr(authorization),sha2(256),hex,lower -m str {digest}",
        "    acl fn_mapped var(txn.fnb) -m found",
        # A Connection header naming other headers (hop-by-hop ones the Python gateway drops;
        # HAProxy would pass them on): such a request goes the controller's way.
        "    acl conn_names req.fhdr_cnt(connection) gt 1",
        f"    acl conn_names req.fhdr(connection),lower -m reg '{CONN_NAMES}'",
        "    acl rid_ok req.fhdr_cnt(x-request-id) eq 1",
        f"    acl rid_safe req.fhdr(x-request-id) -m reg {SAFE_ID}",
        f"    http-request set-var(txn.fnb) {lookup} if fn_path",
        f"    http-request set-var(txn.fast) bool(1) if {check}",
        "    acl fast var(txn.fast) -m bool",
        # The straight path: what the Python gateway does to a request, done here.
        f"    http-request set-var(txn.rid) req.fhdr(x-request-id) if {fast} rid_ok rid_safe",
        f"    http-request set-var(txn.fn) path,field(3,/) if {fast}",
        f"    http-request set-var(txn.rid) uuid if {fast} !{{ var(txn.rid) -m found }}",
        f"    http-request del-header authorization if {fast}",
        f"    http-request del-header proxy- -m beg if {fast}",
        f"    http-request set-header X-Request-Id %[var(txn.rid)] if {fast}",
        f"    http-request set-header X-Forwarded-For %[src] if {fast}",
        f"    http-request set-header X-Forwarded-Prefix /fn/%[var(txn.fn)] if {fast}",
        f"    http-request replace-path ^/fn/[^/]*/?(.*)$ /\\1 if {fast}",
        f"    use_backend %[var(txn.fnb)] if {fast}",
        f"    default_backend {CONTROLLER_BACKEND}",
        "    http-response set-header X-Request-Id %[var(txn.rid)] if { var(txn.rid) -m found }",
        "",
        f"backend {CONTROLLER_BACKEND}",
        "    http-reuse safe",
        # The client's address for the app (its wrong-token limiter), believed with the secret;
        # set, so a client's own headers of these names are replaced.
        f"    http-request set-header {CLIENT_HEADER} %[src]",
        f"    http-request set-header {SECRET_HEADER} {cfg.front_secret or 'none'}",
        # Idle pooled connections go before the app's keep-alive timeout closes them.
        f"    server ctl 127.0.0.1:{cfg.internal_port} maxconn {cfg.max_connections}"
        f" pool-purge-delay {_ms(min(1.0, cfg.keepalive_timeout_s / 2))}",
    ]
    for slot in range(cfg.slots):
        lines += [
            "",
            f"backend {slot_backend(slot)}",
            "    balance leastconn",
            "    http-reuse always",
            # A replica that refused the connection or closed a reused one before answering:
            # once more, on another replica when there is one (as the Python gateway does).
            "    retries 2",
            "    retry-on conn-failure empty-response",
            "    option redispatch 1",
        ]
    return "\n".join(lines) + "\n"
