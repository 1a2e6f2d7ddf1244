"""Settings: ``FF_*`` environment variables, overridden by command-line flags.

Every value is validated at startup; a bad one stops the appliance with a
message naming the variable, what was wrong and what to set instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from appliance.core.clock import Clock, SystemClock
from appliance.core.errors import InvalidInput, StartupError
from appliance.core.partitions import PartitionConfig
from appliance.core.scanners import PERIODIC
from appliance.core.settings import Setting
from appliance.core.tokens import DEFAULT_KID, GRACE_MAX_MS, check_kid, check_secret_hex

#: Every setting the appliance itself reads, in the order the README lists them. A backend
#: plugin declares its own (``flowfabric_settings``), e.g. the sqlite plugin FF_SQLITE_PATH.
SETTINGS = (
    Setting("FF_LISTEN_ADDR", "127.0.0.1:9090", "host:port the HTTP API listens on", "--listen"),
    Setting("FF_BACKEND", "sqlite", "storage backend plugin to use", "--backend"),
    Setting("FF_PLUGIN_PATH", None, "extra backend plugins: folders of .py files or of "
            "`pip install --target` output, or .whl files, separated by ':'", "--plugin-path"),
    Setting("FF_API_TOKEN", None, "Bearer token required on every route but /healthz"),
    Setting("FF_INSECURE", "false",
            "allow a non-loopback FF_LISTEN_ADDR without FF_API_TOKEN", "--insecure"),
    Setting("FF_CORS_ORIGINS", None, "comma-separated browser origins allowed by CORS "
            "('*' for any); unset = no cross-origin access"),
    Setting("FF_FLOW_PARTITIONS", "256", "flow/execution partitions (fixed per store)"),
    Setting("FF_BUDGET_PARTITIONS", "32", "budget partitions (fixed per store)"),
    Setting("FF_QUOTA_PARTITIONS", "32", "quota partitions (fixed per store)"),
    *(scanner.declaration for scanner in PERIODIC.values()),
    Setting("FF_WAITPOINT_HMAC_SECRET", None,
            "hex secret (≥ 32 hex chars) that signs waitpoint tokens; unset: one is generated "
            "on first start and kept in the store"),
    Setting("FF_WAITPOINT_HMAC_KID", "k1", "key id the configured secret is installed under"),
    Setting("FF_WAITPOINT_HMAC_GRACE_MS", "86400000",
            "how long tokens of the previous key stay valid after a rotation"),
    Setting("FF_TERMINAL_RETENTION_MS", "86400000",
            "how long terminal executions are kept (policy stream_policy.retention_ttl_ms "
            "overrides per execution)"),
    Setting("FF_DEFAULT_LEASE_TTL_MS", "30000", "lease TTL when claim-task gives none"),
    Setting("FF_MAX_CLAIM_WAIT_MS", "30000", "longest long-poll a claim-task may ask for"),
    Setting("FF_WORKER_LIVENESS_TTL_MS", "30000",
            "a worker registered by its claims is alive this long after it was last seen"),
    Setting("FF_STREAM_MAX_FRAME_BYTES", "65536", "largest payload of one stream frame"),
    Setting("FF_STREAM_MAX_BYTES", "268435456",
            "payload bytes one attempt's stream may take over its life"),
    Setting("FF_MAX_CONCURRENT_STREAM_OPS", "64",
            "stream reads, tails and event streams served at once; more get 429"),
    Setting("FF_SSE_KEEPALIVE_MS", "15000",
            "an event stream sends a keep-alive comment (and looks again) this often"),
    Setting("FF_CLAIM_REPOLL_MS", "1000",
            "a long-polling claim also looks again this often, in case a wake-up from another "
            "appliance was lost; 0: only when woken"),
    Setting("FF_BODY_TIMEOUT_MS", "30000",
            "a request body must arrive within this time, or the connection is closed (408)"),
    Setting("FF_HEADER_TIMEOUT_MS", "5000",
            "a connection must send a request's headers within this time, and is closed "
            "after this long idle between requests"),
    Setting("FF_MAX_CONNECTIONS", None,
            "most open HTTP connections; more get a prompt 503 overloaded (default: sized "
            "to the process's file-descriptor limit)"),
    Setting("FF_PROCESSES", "1",
            "appliance processes serving one port (they share the store; Valkey and "
            "PostgreSQL only)", "--processes"),
    Setting("FF_SHUTDOWN_GRACE_MS", "15000",
            "how long a drain waits for in-flight requests and background work"),
    Setting("FF_LOG_LEVEL", "info", "debug, info, warning or error", "--log-level"),
)

_BY_ENV = {s.env: s for s in SETTINGS}
#: ``FF_TEST_*`` environment variables belong to the test suite (e.g. FF_TEST_FROZEN_BINARY);
#: a developer may export them in the shell that runs the appliance, so they are not checked.
TEST_PREFIX = "FF_TEST_"
HELP_HINT = "'flowfabric serve --help' lists every setting"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass(slots=True)
class Config:
    listen_host: str = "127.0.0.1"
    listen_port: int = 9090
    backend: str = "sqlite"
    plugin_path: list[str] = field(default_factory=list)
    api_token: str | None = None
    insecure: bool = False
    cors_origins: tuple[str, ...] = ()
    partitions: PartitionConfig = field(default_factory=PartitionConfig)
    scanner_intervals_s: dict[str, float] = field(default_factory=dict)
    retention_ms: int = 86_400_000
    default_lease_ttl_ms: int = 30_000
    max_claim_wait_ms: int = 30_000
    worker_liveness_ttl_ms: int = 30_000
    stream_max_frame_bytes: int = 65_536
    stream_max_bytes: int = 256 * 1_048_576
    max_concurrent_stream_ops: int = 64
    sse_keepalive_s: float = 15.0
    #: 0: a long-polling claim looks again only when woken.
    claim_repoll_s: float = 1.0
    body_timeout_s: float = 30.0
    header_timeout_s: float = 5.0
    #: None: sized at startup from the file-descriptor limit.
    max_connections: int | None = None
    processes: int = 1
    shutdown_grace_s: float = 15.0
    log_level: str = "info"
    #: Waitpoint token signing (None: generated on first start, kept in the store).
    hmac_secret: str | None = None
    hmac_kid: str = "k1"
    hmac_grace_ms: int = 86_400_000
    #: Raw values of every FF_* variable and ``--set`` flag, for plugins.
    options: dict[str, str] = field(default_factory=dict)
    clock: Clock = field(default_factory=SystemClock)

    def option(self, name: str) -> str | None:
        """A plugin's own setting (``FF_…`` env var or ``--set NAME=value``)."""
        value = self.options.get(name)
        return value if value not in (None, "") else None

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


def load_config(env: Mapping[str, str], overrides: Mapping[str, str] | None = None,
                clock: Clock | None = None) -> Config:
    """Build the config from ``FF_*`` variables; ``overrides`` (flags) win."""
    raw = {k: v for k, v in env.items() if k.startswith("FF_")}
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})

    def get(name: str) -> str | None:
        value = raw.get(name)
        if value is None:
            return _BY_ENV[name].default
        return value

    host, port = _parse_listen(get("FF_LISTEN_ADDR") or "")
    cfg = Config(
        listen_host=host,
        listen_port=port,
        backend=(get("FF_BACKEND") or "").strip().lower() or _bad("FF_BACKEND", "", "must "
                                                                  "name a backend, e.g. sqlite"),
        plugin_path=[p for p in (raw.get("FF_PLUGIN_PATH") or "").split(os.pathsep) if p],
        api_token=raw.get("FF_API_TOKEN") or None,
        insecure=_bool("FF_INSECURE", get("FF_INSECURE")),
        cors_origins=_origins(raw.get("FF_CORS_ORIGINS")),
        partitions=PartitionConfig(
            flow=_int("FF_FLOW_PARTITIONS", get("FF_FLOW_PARTITIONS"), 1, 65535),
            budget=_int("FF_BUDGET_PARTITIONS", get("FF_BUDGET_PARTITIONS"), 1, 65535),
            quota=_int("FF_QUOTA_PARTITIONS", get("FF_QUOTA_PARTITIONS"), 1, 65535)),
        scanner_intervals_s={
            scanner.name: scanner.interval_s(_int(
                scanner.setting, get(scanner.setting), 0,
                86_400_000 if scanner.millis else 86_400))
            for scanner in PERIODIC.values()},
        retention_ms=_int("FF_TERMINAL_RETENTION_MS", get("FF_TERMINAL_RETENTION_MS"), 1,
                          2**53),
        default_lease_ttl_ms=_int("FF_DEFAULT_LEASE_TTL_MS", get("FF_DEFAULT_LEASE_TTL_MS"), 1,
                                  86_400_000),
        max_claim_wait_ms=_int("FF_MAX_CLAIM_WAIT_MS", get("FF_MAX_CLAIM_WAIT_MS"), 0, 300_000),
        worker_liveness_ttl_ms=_int("FF_WORKER_LIVENESS_TTL_MS",
                                    get("FF_WORKER_LIVENESS_TTL_MS"), 1000, 86_400_000),
        stream_max_frame_bytes=_int("FF_STREAM_MAX_FRAME_BYTES",
                                    get("FF_STREAM_MAX_FRAME_BYTES"), 1, 16 * 1_048_576),
        stream_max_bytes=_int("FF_STREAM_MAX_BYTES", get("FF_STREAM_MAX_BYTES"), 1, 2**53),
        max_concurrent_stream_ops=_int("FF_MAX_CONCURRENT_STREAM_OPS",
                                       get("FF_MAX_CONCURRENT_STREAM_OPS"), 1, 100_000),
        sse_keepalive_s=_int("FF_SSE_KEEPALIVE_MS", get("FF_SSE_KEEPALIVE_MS"), 100,
                             3_600_000) / 1000,
        claim_repoll_s=_int("FF_CLAIM_REPOLL_MS", get("FF_CLAIM_REPOLL_MS"), 0, 3_600_000) / 1000,
        body_timeout_s=_int("FF_BODY_TIMEOUT_MS", get("FF_BODY_TIMEOUT_MS"), 100,
                            3_600_000) / 1000,
        header_timeout_s=_int("FF_HEADER_TIMEOUT_MS", get("FF_HEADER_TIMEOUT_MS"), 100,
                              3_600_000) / 1000,
        max_connections=(None if raw.get("FF_MAX_CONNECTIONS") in (None, "") else
                         _int("FF_MAX_CONNECTIONS", raw.get("FF_MAX_CONNECTIONS"), 1,
                              1_000_000)),
        processes=_int("FF_PROCESSES", get("FF_PROCESSES"), 1, 64),
        shutdown_grace_s=_int("FF_SHUTDOWN_GRACE_MS", get("FF_SHUTDOWN_GRACE_MS"), 0,
                              3_600_000) / 1000,
        log_level=_choice("FF_LOG_LEVEL", get("FF_LOG_LEVEL"),
                          ("debug", "info", "warning", "error")),
        hmac_secret=_hmac("FF_WAITPOINT_HMAC_SECRET", raw.get("FF_WAITPOINT_HMAC_SECRET"),
                          check_secret_hex),
        hmac_kid=_hmac("FF_WAITPOINT_HMAC_KID", get("FF_WAITPOINT_HMAC_KID"), check_kid)
        or DEFAULT_KID,
        hmac_grace_ms=_int("FF_WAITPOINT_HMAC_GRACE_MS", get("FF_WAITPOINT_HMAC_GRACE_MS"), 0,
                           GRACE_MAX_MS),
        options=raw,
        clock=clock or SystemClock(),
    )
    if not cfg.api_token and not cfg.insecure and cfg.listen_host not in LOOPBACK_HOSTS:
        raise StartupError(
            f"refusing to listen on {cfg.listen} without authentication: set FF_API_TOKEN, "
            f"listen on 127.0.0.1, or pass --insecure (FF_INSECURE=true) if you really mean it")
    return cfg


def check_names(env: Mapping[str, str], set_names: Iterable[str],
                declared: Iterable[Setting] = (), broken: Sequence[str] = ()) -> None:
    """Refuse ``FF_*`` names (environment, ``--set``) that neither the appliance nor a
    loaded plugin declares: a misspelt setting must not be ignored silently."""
    known = sorted({s.env for s in (*SETTINGS, *declared)})
    origins = {name: "environment" for name in env
               if name.startswith("FF_") and not name.startswith(TEST_PREFIX)}
    origins.update({name: "--set" for name in set_names})
    unknown = [(name, origins[name]) for name in sorted(origins) if name not in known]
    if unknown:
        raise StartupError(_unknown_message(unknown, known, broken))


def _unknown_message(unknown: list[tuple[str, str]], known: list[str],
                     broken: Sequence[str]) -> str:
    """One line: each unknown name, where it came from and the likely fix."""
    fixes = [(name, origin, _fix(name, origin, known)) for name, origin in unknown]
    if len(fixes) == 1:
        name, origin, fix = fixes[0]
        if not fix.startswith("did you mean"):
            fix += ", or load the plugin that reads it (--plugin-path / FF_PLUGIN_PATH);"
        text = f"unknown setting {name} ({origin}); {fix} {HELP_HINT}"
    else:
        text = ("unknown settings " + ", ".join(f"{name} ({origin}; {fix})"
                                                for name, origin, fix in fixes) + f"; {HELP_HINT}")
    if broken:
        text += (f"; plugin{'s' if len(broken) > 1 else ''} {', '.join(map(repr, broken))} "
                 f"failed to load and may declare it ('flowfabric plugins' says why)")
    return text


def _fix(name: str, origin: str, known: list[str]) -> str:
    # Compared without the FF_ prefix, which every name shares and which would make
    # unrelated names look alike.
    close = difflib.get_close_matches(name[3:], [k[3:] for k in known], n=1)
    if close:
        return f"did you mean FF_{close[0]}?"
    return "unset it" if origin == "environment" else "remove it"


def _bad(name: str, value: str | None, why: str) -> StartupError:
    raise StartupError(f"invalid value for {name}: {why}, got {value!r}")


def _int(name: str, value: str | None, lo: int, hi: int) -> int:
    try:
        number = int((value or "").strip())
    except ValueError:
        raise _bad(name, value, f"must be an integer in {lo}..{hi}") from None
    if not lo <= number <= hi:
        raise _bad(name, value, f"must be an integer in {lo}..{hi}")
    return number


def _hmac(name: str, value: str | None, check: Callable[[str, str], str]) -> str | None:
    if value in (None, ""):
        return None
    try:
        return check(value, name)
    except InvalidInput as exc:
        raise StartupError(str(exc)) from None


def _bool(name: str, value: str | None) -> bool:
    text = (value or "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise _bad(name, value, "must be true or false")


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> str:
    text = (value or "").strip().lower()
    if text not in choices:
        raise _bad(name, value, f"must be one of {', '.join(choices)}")
    return text


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise _bad("FF_LISTEN_ADDR", value, "must be host:port, e.g. 127.0.0.1:9090")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            labels = host.split(".")
            if not all(label and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
                       for label in labels):
                raise _bad("FF_LISTEN_ADDR", value, "host must be an IP address or hostname")
    return host, _int("FF_LISTEN_ADDR", port, 0, 65535)


def _origins(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    origins = tuple(o.strip() for o in value.split(",") if o.strip())
    if not origins:
        raise StartupError("invalid value for FF_CORS_ORIGINS: it is set but empty; unset it "
                           "(no cross-origin access), pass '*', or list origins separated by "
                           "commas")
    for origin in origins:
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in origin):
            raise StartupError(f"invalid value for FF_CORS_ORIGINS: origin {origin!r} contains "
                               f"whitespace or control characters")
    return origins
