"""Frozen settings built once by the CLI: defaults < venues TOML < environment < flags.

This is the only module that reads os.environ or the venues TOML. Credentials are kept out
of every repr, so that no log line or traceback can print them.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from batchcancel.errors import ConfigError
from batchcancel.venues import VENUES

__all__ = [
    "DB_VAR",
    "DEFAULT_DB_URL",
    "VENUES_VAR",
    "Settings",
    "VenueSettings",
    "load_settings",
]

DB_VAR: Final = "BATCHCANCEL_DB"
VENUES_VAR: Final = "BATCHCANCEL_VENUES"
DEFAULT_DB_URL: Final = "sqlite:///batchcancel.db"
DEFAULT_MAX_IN_FLIGHT: Final = 32
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_BACKOFF: Final = 0.5  # first retry delay in seconds; doubles per attempt, with jitter
_FLOAT_KEYS: Final = frozenset({"period", "timeout", "cooldown", "backoff"})
_INT_KEYS: Final = frozenset({"rate_limit", "max_in_flight"})
_KNOWN_KEYS: Final = _FLOAT_KEYS | _INT_KEYS | {"base_url"}


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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs from configuration."""

    db_url: str
    venues: Mapping[str, VenueSettings]

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential value, for redaction of anything that leaves the process."""
        return tuple(v for venue in self.venues.values() for v in venue.credentials.values() if v)


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
        venues[name] = _venue_settings(name, values, credentials)
    return Settings(db_url=db_url or environ.get(DB_VAR) or DEFAULT_DB_URL, venues=venues)


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

    base_url = values["base_url"]
    if not isinstance(base_url, str):
        raise ConfigError(f"[venues.{name}] base_url must be a string, got {base_url!r}")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"[venues.{name}] base_url must start with http:// or https://, got {base_url!r}"
        )
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
    )
