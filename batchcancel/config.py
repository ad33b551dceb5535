"""Frozen settings built once by the CLI: defaults < venues TOML < environment < flags.

This is the only module that reads os.environ or the venues TOML. Credentials are kept out
of every repr, so that no log line or traceback can print them.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from batchcancel.errors import ConfigError
from batchcancel.venues import VENUES

__all__ = [
    "DB_VAR",
    "DEBUG_VAR",
    "DEFAULT_DB_URL",
    "METRICS_INTERVAL_VAR",
    "VENUES_VAR",
    "Settings",
    "VenueSettings",
    "credential_is_set",
    "debug_enabled",
    "environment_credentials",
    "is_loopback",
    "load_settings",
    "metrics_interval",
    "settings_for_run",
    "settings_from_environment",
]

DB_VAR: Final = "BATCHCANCEL_DB"
VENUES_VAR: Final = "BATCHCANCEL_VENUES"
SIGNING_KEY_VAR: Final = "BATCHCANCEL_AUDIT_SIGNING_KEY"  # Ed25519: run digests are signed
DEBUG_VAR: Final = "BATCHCANCEL_DEBUG"  # set: an internal error keeps its traceback
METRICS_INTERVAL_VAR: Final = "BATCHCANCEL_METRICS_INTERVAL"  # seconds between textfile writes
DEFAULT_DB_URL: Final = "sqlite:///batchcancel.db"
DEFAULT_MAX_IN_FLIGHT: Final = 32
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_BACKOFF: Final = 0.5  # first retry delay in seconds; doubles per attempt, with jitter
_FLOAT_KEYS: Final = frozenset({"period", "timeout", "cooldown", "backoff"})
_INT_KEYS: Final = frozenset({"rate_limit", "max_in_flight"})
# `accounts` (ETNA) and `symbols` (ZebPay): what listing a venue's book needs when the input
# names none (SPEC "The venues' own books").
_LIST_KEYS: Final = frozenset({"accounts", "symbols"})
_KNOWN_KEYS: Final = _FLOAT_KEYS | _INT_KEYS | _LIST_KEYS | {"base_url", "allow_insecure"}
# SPEC: http(s)://host[:port][/path]. Only RFC 3986 characters; `?` and `#` are refused apart.
_URL_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME_AUTHORITY: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)")
_HOST_PORT: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(.*))?")


@dataclass(frozen=True, slots=True)
class VenueSettings:
    """How to reach and pace one venue. rate_limit 0 means unthrottled (simulators only)."""

    name: str
    base_url: str
    rate_limit: int
    period: float
    max_in_flight: int
    timeout: float
    cooldown: float
    backoff: float
    credentials: Mapping[str, str] = field(repr=False, default_factory=dict)
    allow_insecure: bool = False  # plain http:// to a host that is not loopback
    accounts: tuple[str, ...] = ()  # to list the book by (ETNA), when the input names none
    symbols: tuple[str, ...] = ()  # to list the book by (ZebPay), when the input names none


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs from configuration."""

    db_url: str
    venues: Mapping[str, VenueSettings]
    signing_key: str | None = None  # the audit signing key's text (a secret, like credentials)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential value, for redaction of anything that leaves the process."""
        values = [v for venue in self.venues.values() for v in venue.credentials.values() if v]
        if self.signing_key:
            values += [self.signing_key, *self.signing_key.strip().splitlines()[1:-1]]
        return tuple(values)


def load_settings(
    environ: Mapping[str, str],
    *,
    db_url: str | None = None,
    venues_config: str | None = None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> Settings:
    """Build Settings from flags (given here), then the environment, the TOML, and defaults."""
    config_path = venues_config or environ.get(VENUES_VAR)
    tables = _read_toml(Path(config_path)) if config_path else {}
    venues = {}
    for name, venue_class in VENUES.items():
        values: dict[str, object] = {
            "base_url": venue_class.defaults.base_url,
            "rate_limit": venue_class.defaults.rate_limit,
            "period": venue_class.defaults.period,
            "cooldown": venue_class.defaults.cooldown,
            "max_in_flight": DEFAULT_MAX_IN_FLIGHT,
            "timeout": DEFAULT_TIMEOUT,
            "backoff": DEFAULT_BACKOFF,
        }
        values.update(tables.get(name, {}))
        values.update((overrides or {}).get(name, {}))
        credentials = {var: environ[var] for var in venue_class.credential_vars if environ.get(var)}
        for var, value in credentials.items():
            _check_credential(var, value)
        venues[name] = _venue_settings(name, values, credentials)
    return Settings(
        db_url=db_url or environ.get(DB_VAR) or DEFAULT_DB_URL,
        venues=venues,
        signing_key=environ.get(SIGNING_KEY_VAR) or None,
    )


def settings_from_environment(
    *, db_url: str | None = None, venues_config: str | None = None
) -> Settings:
    """The command's Settings: its flags over this process's environment (load_settings)."""
    return load_settings(os.environ, db_url=db_url, venues_config=venues_config)


def settings_for_run(
    recorded_venues_config: object,
    *,
    db_url: str | None,
    venues_config: str | None,
    loaded: Settings,
) -> Settings:
    """The Settings a command on an existing run uses: those of the venues config the run
    recorded, unless one is given now (--venues-config or BATCHCANCEL_VENUES): then `loaded`,
    the command's own."""
    if not venues_config and recorded_venues_config and not os.environ.get(VENUES_VAR):
        return settings_from_environment(db_url=db_url, venues_config=str(recorded_venues_config))
    return loaded


def environment_credentials() -> Settings | None:
    """The environment's credentials (no venues file read), for redaction before the command
    has read its own config; None when they are unusable (the command stops on that itself,
    with a message that names no value)."""
    try:
        return load_settings(os.environ, venues_config=os.devnull)
    except ConfigError:
        return None


def credential_is_set(var: str) -> bool:
    """Whether the credential variable `var` is set (for `venues`, which never shows values)."""
    return bool(os.environ.get(var))


def debug_enabled() -> bool:
    """BATCHCANCEL_DEBUG is set: an unexpected error is raised with its traceback."""
    return bool(os.environ.get(DEBUG_VAR))


def metrics_interval(default: float) -> float:
    """Seconds between metrics textfile writes: BATCHCANCEL_METRICS_INTERVAL, or `default`."""
    try:
        return float(os.environ.get(METRICS_INTERVAL_VAR) or default)
    except ValueError:
        return default


def _read_toml(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"venues config {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"venues config {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"venues config {path} is not valid TOML: {exc}") from None
    unknown_top = set(data) - {"venues"}
    if unknown_top:
        raise ConfigError(
            f"venues config {path}: unknown table(s) {sorted(unknown_top)}; expected [venues.<name>]"
        )
    tables = data.get("venues", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"venues config {path}: `venues` must be a table")
    for name, table in tables.items():
        if name not in VENUES:
            raise ConfigError(
                f"venues config {path}: unknown venue {name!r}; known: {', '.join(sorted(VENUES))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"venues config {path}: [venues.{name}] must be a table")
        unknown = set(table) - _KNOWN_KEYS
        if unknown:
            raise ConfigError(
                f"venues config {path}: [venues.{name}] has unknown key(s) {sorted(unknown)}; "
                f"allowed: {', '.join(sorted(_KNOWN_KEYS))}"
            )
    return tables


def _venue_settings(
    name: str, values: Mapping[str, object], credentials: dict[str, str]
) -> VenueSettings:
    def number(key: str) -> float:
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"[venues.{name}] {key} must be a number, got {value!r}")
        if key in _INT_KEYS and not float(value).is_integer():
            raise ConfigError(f"[venues.{name}] {key} must be a whole number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"[venues.{name}] {key} must be a finite number, got {value!r}")
        if value < 0 or (value == 0 and key not in ("rate_limit", "backoff", "cooldown")):
            raise ConfigError(f"[venues.{name}] {key} must be positive, got {value!r}")
        return float(value)

    allow_insecure = values.get("allow_insecure", False)
    if not isinstance(allow_insecure, bool):
        raise ConfigError(f"[venues.{name}] allow_insecure must be true or false")
    base_url = values["base_url"]
    if not isinstance(base_url, str):
        raise ConfigError(
            f"[venues.{name}] base_url must be a string, got {type(base_url).__name__}"
        )
    if base_url:  # empty: not configured (ETNA has no public host); the engine says so
        problem = _base_url_problem(base_url, allow_insecure=allow_insecure)
        if problem:
            raise ConfigError(f"[venues.{name}] base_url {problem}")
    lists = {key: _strings(name, key, values.get(key, [])) for key in _LIST_KEYS}
    return VenueSettings(
        name=name,
        base_url=base_url,
        rate_limit=int(number("rate_limit")),
        period=number("period"),
        max_in_flight=int(number("max_in_flight")),
        timeout=number("timeout"),
        cooldown=number("cooldown"),
        backoff=number("backoff"),
        credentials=credentials,
        allow_insecure=allow_insecure,
        accounts=lists["accounts"],
        symbols=lists["symbols"],
    )


def _strings(name: str, key: str, value: object) -> tuple[str, ...]:
    """A list of non-empty strings (account ids may be written as numbers)."""
    if not isinstance(value, list):
        raise ConfigError(f"[venues.{name}] {key} must be a list, e.g. {key} = [\"...\"]")
    items = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int) or not str(item).strip():
            raise ConfigError(f"[venues.{name}] {key} must hold non-empty strings")
        items.append(str(item).strip())
    return tuple(items)


def _base_url_problem(url: str, *, allow_insecure: bool) -> str:
    """What breaks SPEC's base_url rule, or "". Never quotes the URL: user info and a
    query may hold secrets."""
    bad = next((ch for ch in url if not _URL_CHARS.fullmatch(ch)), None)
    if bad is not None:
        return (
            f"has a character a URL cannot hold (U+{ord(bad):04X}): no whitespace or control "
            "characters; percent-encode anything else"
        )
    if _BAD_PERCENT.search(url):
        return "has a % character not followed by two hex digits"
    parts = _SCHEME_AUTHORITY.match(url)
    if parts is None or parts[1].lower() not in ("http", "https"):
        scheme = f", not {parts[1]}://" if parts else ""
        return f"must start with http:// or https://{scheme}"
    scheme, authority = parts[1].lower(), parts[2]
    if "@" in authority:
        return "has user info (user:password@): user info is not allowed"
    if "?" in url:
        return "has a query ('?'): no query is allowed, the order's path would land in it"
    if "#" in url:
        return "has a fragment ('#'): no fragment is allowed, the order's path would be cut off"
    if not authority or authority.startswith(":"):
        return "has no host: it must be http(s)://host[:port][/path]"
    host_port = _HOST_PORT.fullmatch(authority)
    if host_port is None or not _valid_host(host_port[1]):
        return "has no valid host: a name, an IPv4 address or an [IPv6] address"
    port = host_port[2]
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        return "has a bad port: it must be a number from 1 to 65535"
    host = host_port[1].strip("[]").lower()
    if scheme == "http" and not allow_insecure and not is_loopback(host):
        return (
            f"uses plain http:// to {host}, which is not loopback: use https://, "
            "or set allow_insecure = true in this venue's section to send credentials in clear"
        )
    return ""


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
    return True


def is_loopback(host: str) -> bool:
    """SPEC's loopback hosts: 127.0.0.0/8, ::1 and localhost (nothing else, not ::ffff:127.x)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.version == 4:
        return address in ipaddress.IPv4Network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


def _check_credential(var: str, value: str) -> None:
    """A credential must fit in an HTTP header: no CR, LF, NUL or other control character.
    The message names the variable, never the value."""
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ConfigError(
            f"{var} holds a control character (CR, LF, NUL, tab or another): "
            "a credential must fit in an HTTP header; check for a stray newline"
        )
