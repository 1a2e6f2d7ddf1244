"""Where the store is: ``FF_VALKEY_URL`` or ``FF_HOST``/``FF_PORT``/``FF_TLS``; ``FF_CLUSTER``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from appliance.core.errors import StartupError
from appliance.core.settings import Setting

DEFAULT_URL = "redis://127.0.0.1:6379/0"
SCHEMES = {"redis": False, "valkey": False, "rediss": True, "valkeys": True}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

#: What this plugin reads (its ``flowfabric_settings``).
SETTINGS = (
    Setting("FF_VALKEY_URL", DEFAULT_URL, "Valkey/Redis address: redis://[user:pass@]host:port/db; "
            "rediss:// for TLS, ?cluster=true for a cluster"),
    Setting("FF_HOST", None, "Valkey/Redis host, instead of FF_VALKEY_URL (127.0.0.1 when only "
            "FF_PORT or FF_TLS is set)"),
    Setting("FF_PORT", None, "Valkey/Redis port, instead of FF_VALKEY_URL (6379 when unset)"),
    Setting("FF_TLS", "false", "connect to FF_HOST/FF_PORT with TLS"),
    Setting("FF_CLUSTER", "false", "talk to a Valkey/Redis Cluster"),
)


@dataclass(frozen=True, slots=True)
class ValkeySettings:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    tls: bool = False
    cluster: bool = False
    username: str | None = None
    password: str | None = None

    def describe(self) -> str:
        """The address without credentials, e.g. ``redis://127.0.0.1:6379/0``."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        where = f"{scheme}://{host}:{self.port}/{self.db}"
        return where + (" (cluster)" if self.cluster else "")

    def client_kwargs(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "username": self.username,
                "password": self.password, "ssl": self.tls}


def _bad(name: str, value: str, why: str) -> StartupError:
    return StartupError(f"invalid value for {name}: {why}, got {value!r}")


def _flag(config: Any, name: str) -> bool:
    raw = config.option(name)
    if raw is None:
        return False
    text = raw.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise _bad(name, raw, "must be true or false")


def _port(name: str, text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise _bad(name, text, "must be a port number 1..65535") from None
    if not 1 <= port <= 65535:
        raise _bad(name, text, "must be a port number 1..65535")
    return port


def settings_from(config: Any) -> ValkeySettings:
    """Read and validate the settings; every message names the variable to fix."""
    url = config.option("FF_VALKEY_URL")
    tls, cluster = _flag(config, "FF_TLS"), _flag(config, "FF_CLUSTER")
    host, port = config.option("FF_HOST"), config.option("FF_PORT")
    if url is None:
        if host is None and port is None and not tls:
            return _parse_url(DEFAULT_URL, cluster)
        return ValkeySettings(host=(host or "127.0.0.1").strip(),
                              port=_port("FF_PORT", port) if port is not None else 6379,
                              tls=tls, cluster=cluster)
    if host is not None or port is not None:
        raise StartupError("FF_VALKEY_URL and FF_HOST/FF_PORT are both set; give the address "
                           "one way (e.g. FF_VALKEY_URL=redis://host:6379/0)")
    settings = _parse_url(url, cluster)
    if tls and not settings.tls:
        raise _bad("FF_TLS", "true", "FF_VALKEY_URL already says how to connect; use a "
                                     "rediss:// URL for TLS instead of FF_TLS")
    return settings


def _parse_url(url: str, cluster: bool) -> ValkeySettings:
    name = "FF_VALKEY_URL"
    shown = url if "@" not in url else url.split("://", 1)[0] + "://***@" + url.split("@", 1)[1]
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise _bad(name, shown, "must look like redis://host:6379/0") from None
    if parts.scheme not in SCHEMES:
        raise _bad(name, shown, "must start with redis://, rediss://, valkey:// or valkeys://")
    if not parts.hostname:
        raise _bad(name, shown, "must name a host, e.g. redis://127.0.0.1:6379/0")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise _bad(name, shown, "the path must be a database number, e.g. /0")
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "cluster":
            raise _bad(name, shown, f"unknown query parameter {key!r} (only ?cluster=true)")
        if value.lower() not in TRUE + FALSE:
            raise _bad(name, shown, "cluster= must be true or false")
        cluster = cluster or value.lower() in TRUE
    db = int(path or 0)
    if cluster and db != 0:
        raise _bad(name, shown, "a cluster has only database 0")
    return ValkeySettings(host=parts.hostname, port=port or 6379, db=db,
                          tls=SCHEMES[parts.scheme], cluster=cluster,
                          username=unquote(parts.username) if parts.username else None,
                          password=unquote(parts.password) if parts.password else None)
