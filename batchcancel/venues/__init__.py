"""The venue registry: one adapter class per venue, by its lowercase name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from batchcancel.errors import ConfigError
from batchcancel.venues.base import Venue
from batchcancel.venues.crux import CruxVenue
from batchcancel.venues.etna import EtnaVenue
from batchcancel.venues.sfox import SfoxVenue
from batchcancel.venues.tanx import TanxVenue
from batchcancel.venues.zebpay import ZebpayVenue

__all__ = ["VENUES", "get_venue"]

VENUES: Final[Mapping[str, type[Venue]]] = {
    "sfox": SfoxVenue,
    "etna": EtnaVenue,
    "crux": CruxVenue,
    "tanx": TanxVenue,
    "zebpay": ZebpayVenue,
}


def get_venue(name: str) -> type[Venue]:
    """The adapter class for `name`, or a ConfigError naming the known venues."""
    try:
        return VENUES[name]
    except KeyError:
        raise ConfigError(
            f"unknown venue {name!r}; known venues: {', '.join(sorted(VENUES))}"
        ) from None
