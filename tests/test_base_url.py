"""SPEC's `base_url` rule: `http(s)://host[:port][/path]`, no user info, query or fragment;
plain http:// only to loopback unless the venue sets `allow_insecure = true`.

load_settings on real TOML files, then the real CLI against a real simulator: a refused
base_url is exit 2 with one line, and the simulator hears nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchcancel.config import VENUES_VAR, load_settings
from batchcancel.errors import ConfigError
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.simulators.tanx import TanxSimulator
from batchcancel.venues import VENUES
from tests.conftest import (
    CREDENTIALS,
    SECRET_VALUES,
    ServeSimulators,
    cli_env,
    run_cli,
    write_orders_csv,
)

ACCEPTED = [
    "https://api.sfox.com",
    "https://api.sfox.com/",
    "https://broker.example/api",
    "https://broker.example:8443/api/v2",
    "HTTPS://API.SFOX.COM/x",
    "https://10.1.2.3/api",
    "https://[2001:db8::1]:443/api",
    "http://127.0.0.1:8900/sfox",
    "http://127.200.3.4/x",
    "http://localhost:8900",
    "http://LocalHost/x",
    "http://[::1]:8900/sfox",
    "http://[0:0:0:0:0:0:0:1]/x",
    "http://127.0.0.1:8900/a%20b",
]

# (base_url, a phrase the message must hold)
REFUSED = [
    # plain http:// to a host that is not loopback
    ("http://api.sfox.com", "allow_insecure"),
    ("http://api.sfox.com:443/", "allow_insecure"),
    ("http://10.0.0.5:8900/sfox", "allow_insecure"),
    ("http://0.0.0.0:8900/sfox", "allow_insecure"),
    ("http://[::ffff:127.0.0.1]:8900/sfox", "allow_insecure"),
    ("http://[2001:db8::1]/x", "allow_insecure"),
    ("http://localhost.evil.example/x", "allow_insecure"),
    ("http://127.0.0.1.evil.example/x", "allow_insecure"),
    ("http://127.1/x", "allow_insecure"),
    # user info
    ("https://user:pw@api.sfox.com", "user info is not allowed"),
    ("https://token@api.sfox.com/x", "user info is not allowed"),
    ("https://@api.sfox.com", "user info is not allowed"),
    ("http://u:p@127.0.0.1:8900/sfox", "user info is not allowed"),
    # query and fragment
    ("https://api.sfox.com/x?a=1", "query"),
    ("https://api.sfox.com?", "query"),
    ("http://127.0.0.1:8900/sfox?", "query"),
    ("https://api.sfox.com/#x", "fragment"),
    ("https://api.sfox.com#", "fragment"),
    ("http://127.0.0.1:8900/sfox#", "fragment"),
    # scheme
    ("ftp://api.sfox.com", "http:// or https://"),
    ("ws://api.sfox.com", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("api.sfox.com", "http:// or https://"),
    ("//api.sfox.com", "http:// or https://"),
    ("https:/api.sfox.com", "http:// or https://"),
    ("https//api.sfox.com", "http:// or https://"),
    # host
    ("https://", "host"),
    ("https:///v1", "host"),
    ("https://:443/x", "host"),
    ("https://[::1/x", "host"),
    ("https://[zz::1]/x", "host"),
    ("https://[::1]x/", "host"),
    # port
    ("https://api.sfox.com:0", "port"),
    ("https://api.sfox.com:65536/x", "port"),
    ("https://api.sfox.com:99999999", "port"),
    ("https://api.sfox.com:abc", "port"),
    ("https://api.sfox.com:-1", "port"),
    ("https://api.sfox.com:", "port"),
    ("https://api.sfox.com:443:1", "port"),
    ("http://127.0.0.1:\uff18\uff19/x", "character"),
    # whitespace, control and other characters a URL cannot hold
    (" https://api.sfox.com", "character"),
    ("https://api.sfox.com ", "character"),
    ("https://api .sfox.com", "character"),
    ("https://api.sfox.com/a b", "character"),
    ("https://api.sfox.com/\n", "character"),
    ("https://api.sfox.com/\r\nX-Evil: 1", "character"),
    ("https://api.sfox.com/\t", "character"),
    ("https://api.sfox.com/\x00", "character"),
    ("https://api.sfox.com/\x7f", "character"),
    ("https://api.sfox.com/\u00a0", "character"),
    ("https://api.sfox.com/\u2028", "character"),
    ("https://api.sfox.com\\@evil.example", "character"),
    ("https://xn--pi-.example/\u00e9", "character"),
    ("https://api.sfox.com/%zz", "character"),
]


def toml_text(base_url: str, extra: str = "") -> str:
    """A [venues.sfox] table with this base_url, written as a TOML basic string."""
    escaped = "".join(
        ch if ch.isprintable() and ch not in '"\\' else f"\\u{ord(ch):04x}" for ch in base_url
    )
    return f'[venues.sfox]\nbase_url = "{escaped}"\n{extra}'


def load(tmp_path: Path, text: str) -> str:
    """The sfox base_url load_settings keeps from this TOML."""
    path = tmp_path / "venues.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings({}, venues_config=str(path)).venues["sfox"].base_url


def refusal(tmp_path: Path, text: str) -> str:
    """The one-line ConfigError message load_settings raises for this TOML."""
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    message = str(exc.value)
    assert "\n" not in message and "\r" not in message
    return message


class TestRule:
    @pytest.mark.parametrize("url", ACCEPTED)
    def test_accepted(self, tmp_path: Path, url: str) -> None:
        """https:// anywhere, http:// to 127.0.0.0/8, ::1 and localhost; kept as written."""
        assert load(tmp_path, toml_text(url)) == url

    @pytest.mark.parametrize(("url", "phrase"), REFUSED)
    def test_refused(self, tmp_path: Path, url: str, phrase: str) -> None:
        """Every form outside the rule is a one-line ConfigError naming venue and key."""
        message = refusal(tmp_path, toml_text(url))
        assert "[venues.sfox] base_url" in message
        assert phrase in message

    def test_not_configured_is_left_to_the_engine(self, tmp_path: Path) -> None:
        """An empty base_url (ETNA has no public host) is 'not configured', not a bad URL."""
        assert load(tmp_path, toml_text("")) == ""
        assert load_settings({}).venues["etna"].base_url == ""

    @pytest.mark.parametrize("name", sorted(VENUES))
    def test_defaults_follow_the_rule(self, name: str) -> None:
        """Every production default is https:// (or unset), so defaults pass the same check."""
        default = VENUES[name].defaults.base_url
        assert default == "" or default.startswith("https://")
        assert load_settings({}).venues[name].base_url == default

    @pytest.mark.parametrize(
        "url",
        [
            "https://alice:hunter2-SECRET@api.sfox.com",
            "https://hunter2-SECRET@api.sfox.com/v1",
            "http://alice:hunter2-SECRET@api.sfox.com",
            "https://alice:hunter2-SECRET@api.sfox.com/?q=1#f",
            "https://alice:hunter2-SECRET@api.sfox.com:99999",
            "https://alice:hunter2 SECRET@api.sfox.com",
            "ftp://alice:hunter2-SECRET@api.sfox.com",
        ],
    )
    def test_user_info_never_echoed(self, tmp_path: Path, url: str) -> None:
        """User info is a secret: the message names the problem, never the user or password."""
        message = refusal(tmp_path, toml_text(url))
        assert "hunter2" not in message and "alice" not in message
        assert "[venues.sfox] base_url" in message

    def test_query_never_echoed(self, tmp_path: Path) -> None:
        """A query may carry a token: it is refused without being repeated."""
        message = refusal(tmp_path, toml_text("https://api.sfox.com/v1?api_key=tok-SECRET-1"))
        assert "tok-SECRET-1" not in message and "query" in message


class TestAllowInsecure:
    def test_plain_http_to_any_host(self, tmp_path: Path) -> None:
        """`allow_insecure = true` lets plain http:// reach a host that is not loopback."""
        url = "http://broker.internal:8080/api"
        assert load(tmp_path, toml_text(url, "allow_insecure = true\n")) == url

    def test_false_is_the_default(self, tmp_path: Path) -> None:
        """`allow_insecure = false` is the same as leaving it out."""
        message = refusal(
            tmp_path, toml_text("http://broker.internal/api", "allow_insecure = false\n")
        )
        assert "allow_insecure" in message

    @pytest.mark.parametrize(
        "url",
        [
            "http://user:pw@broker.internal/api",
            "http://broker.internal/api?x",
            "http://broker.internal/api#x",
            "http://broker.internal:0/api",
            "gopher://broker.internal/api",
            "http:///api",
        ],
    )
    def test_relaxes_nothing_else(self, tmp_path: Path, url: str) -> None:
        """It only allows plain http://: the rest of the rule still holds."""
        message = refusal(tmp_path, toml_text(url, "allow_insecure = true\n"))
        assert "[venues.sfox] base_url" in message and "allow_insecure" not in message

    @pytest.mark.parametrize("value", ['"true"', "1", "0", '"yes"', "[true]"])
    def test_must_be_boolean(self, tmp_path: Path, value: str) -> None:
        """Only TOML true or false: "true" in quotes or 1 is a mistake, not a yes."""
        text = toml_text("https://api.sfox.com", f"allow_insecure = {value}\n")
        message = refusal(tmp_path, text)
        assert "[venues.sfox] allow_insecure" in message and "true or false" in message

    def test_per_venue(self, tmp_path: Path) -> None:
        """One venue's allow_insecure does not cover another's plain http://."""
        text = (
            '[venues.sfox]\nbase_url = "http://a.internal/"\nallow_insecure = true\n'
            '[venues.tanx]\nbase_url = "http://b.internal/"\n'
        )
        message = refusal(tmp_path, text)
        assert "[venues.tanx] base_url" in message


class TestEveryPath:
    def test_environment_variable(self, tmp_path: Path) -> None:
        """A file named by BATCHCANCEL_VENUES is checked like --venues-config."""
        path = tmp_path / "env.toml"
        path.write_text(toml_text("http://api.sfox.com"), encoding="utf-8")
        with pytest.raises(ConfigError, match=r"\[venues.sfox\] base_url"):
            load_settings({VENUES_VAR: str(path)})

    def test_overrides(self) -> None:
        """Programmatic overrides (the demo's) are checked too."""
        with pytest.raises(ConfigError, match="user info is not allowed"):
            load_settings({}, overrides={"crux": {"base_url": "https://u:p@api.cruxconnect.com"}})


def _orders(tmp_path: Path) -> Path:
    rows = [{"venue": "sfox", "order_id": str(n)} for n in range(1, 6)]
    rows += [{"venue": "tanx", "order_id": str(n)} for n in range(1, 6)]
    return write_orders_csv(tmp_path / "orders.csv", rows)


def _simulators() -> dict[str, SfoxSimulator | TanxSimulator]:
    sfox = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
    tanx = TanxSimulator(credentials=CREDENTIALS, rate_limit=None)
    for simulator in (sfox, tanx):
        simulator.seed({str(n): OrderState.OPEN for n in range(1, 6)})
    return {"sfox": sfox, "tanx": tanx}


class TestCli:
    """0.0.0.0 is not loopback by SPEC's rule, yet on Linux it connects to this machine: the
    old prefix check sent cancels in clear through it to the simulator."""

    @pytest.mark.parametrize(
        "tanx_url",
        [
            "http://0.0.0.0:{port}/tanx",
            "http://127.0.0.1:{port}/tanx#frag",
            "http://127.0.0.1:{port}/tanx?",
            "http://alice:hunter2-SECRET@127.0.0.1:{port}/tanx",
            "https:///tanx",
        ],
        ids=["http-not-loopback", "fragment", "query", "user-info", "no-host"],
    )
    async def test_refused_before_anything_is_sent(
        self, tmp_path: Path, serve_simulators: ServeSimulators, tanx_url: str
    ) -> None:
        """A bad tanx base_url: exit 2, one line naming venue and key, no password echoed,
        and neither simulator (the good sfox one included) received a request."""
        simulators = _simulators()
        async with serve_simulators(simulators) as server:
            config = tmp_path / "venues.toml"
            config.write_text(
                f'[venues.sfox]\nbase_url = "{server.url("sfox")}"\nrate_limit = 0\n'
                f'[venues.tanx]\nbase_url = "{tanx_url.format(port=server.port)}"\n'
                "rate_limit = 0\n",
                encoding="utf-8",
            )
            result = await run_cli(
                "run",
                str(_orders(tmp_path)),
                "--venues-config",
                str(config),
                env=cli_env(tmp_path / "a.db"),
            )
        assert result.code == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("batchcancel: error:"), result.stderr
        assert "[venues.tanx] base_url" in lines[0]
        assert "hunter2" not in result.stdout + result.stderr
        assert simulators["sfox"].total_requests == 0
        assert simulators["tanx"].total_requests == 0

    async def test_allow_insecure_sends(
        self, tmp_path: Path, serve_simulators: ServeSimulators
    ) -> None:
        """With `allow_insecure = true` the same non-loopback http:// base_url is used."""
        simulators = _simulators()
        async with serve_simulators(simulators) as server:
            config = tmp_path / "venues.toml"
            config.write_text(
                f'[venues.sfox]\nbase_url = "{server.url("sfox")}"\nrate_limit = 0\n'
                f'[venues.tanx]\nbase_url = "http://0.0.0.0:{server.port}/tanx"\n'
                "rate_limit = 0\nallow_insecure = true\n",
                encoding="utf-8",
            )
            result = await run_cli(
                "run",
                str(_orders(tmp_path)),
                "--venues-config",
                str(config),
                env=cli_env(tmp_path / "a.db"),
            )
        assert result.code == 0, result.stderr
        assert simulators["tanx"].total_requests == 5
        assert simulators["sfox"].total_requests == 5
        for secret in SECRET_VALUES:
            assert secret not in result.stdout + result.stderr
