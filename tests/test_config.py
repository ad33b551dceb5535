"""Settings: defaults < venues TOML < environment < flags; credentials only from their variables.

Real TOML files in tmp_path; environments are plain dicts handed to load_settings, as the CLI
hands it os.environ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchcancel import config
from batchcancel.config import (
    DB_VAR,
    DEFAULT_BACKOFF,
    DEFAULT_DB_URL,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT,
    VENUES_VAR,
    Settings,
    load_settings,
)
from batchcancel.errors import ConfigError, InputError
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.venues import VENUES
from tests.conftest import (
    CREDENTIALS,
    SECRET_VALUES,
    ServeSimulators,
    cli_env,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)

FULL_SFOX = """\
[venues.sfox]
base_url = "http://127.0.0.1:8900/sfox"
rate_limit = 20
period = 2
max_in_flight = 4
timeout = 3.5
cooldown = 7.0
backoff = 0.25
"""


def toml(tmp_path: Path, text: str, name: str = "venues.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(tmp_path: Path, text: str) -> str:
    """The one-line ConfigError message load_settings raises for this TOML."""
    with pytest.raises(ConfigError) as exc:
        load_settings({}, venues_config=toml(tmp_path, text))
    message = str(exc.value)
    assert message
    assert "\n" not in message and "\r" not in message
    return message


class TestDefaults:
    def test_every_venue_present(self) -> None:
        """Without config every registered venue has settings, and no other."""
        settings = load_settings({})
        assert set(settings.venues) == set(VENUES)
        assert all(v.name == name for name, v in settings.venues.items())

    @pytest.mark.parametrize("name", sorted(VENUES))
    def test_defaults_from_adapter(self, name: str) -> None:
        """Each venue's endpoint and limits are its adapter's documented defaults."""
        venue = load_settings({}).venues[name]
        defaults = VENUES[name].defaults
        assert venue.base_url == defaults.base_url
        assert venue.rate_limit == defaults.rate_limit
        assert venue.period == defaults.period
        assert venue.cooldown == defaults.cooldown
        assert venue.max_in_flight == DEFAULT_MAX_IN_FLIGHT
        assert venue.timeout == DEFAULT_TIMEOUT
        assert venue.backoff == DEFAULT_BACKOFF
        assert dict(venue.credentials) == {}

    def test_default_db(self) -> None:
        """SPEC: the audit database defaults to sqlite:///batchcancel.db."""
        assert load_settings({}).db_url == DEFAULT_DB_URL == "sqlite:///batchcancel.db"

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty TOML file changes nothing."""
        assert load_settings({}, venues_config=toml(tmp_path, "")) == load_settings({})

    def test_os_environ_not_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Only the environment handed in counts, never os.environ behind the caller's back."""
        monkeypatch.setenv(DB_VAR, "sqlite:///from-os-environ.db")
        monkeypatch.setenv("BATCHCANCEL_SFOX_API_KEY", CREDENTIALS["BATCHCANCEL_SFOX_API_KEY"])
        settings = load_settings({})
        assert settings.db_url == DEFAULT_DB_URL
        assert settings.secrets == ()


class TestToml:
    def test_overrides_every_key(self, tmp_path: Path) -> None:
        """A [venues.sfox] table sets every key it names; numbers get their types."""
        sfox = load_settings({}, venues_config=toml(tmp_path, FULL_SFOX)).venues["sfox"]
        assert sfox.base_url == "http://127.0.0.1:8900/sfox"
        assert (sfox.rate_limit, sfox.max_in_flight) == (20, 4)
        assert isinstance(sfox.rate_limit, int) and isinstance(sfox.max_in_flight, int)
        assert (sfox.period, sfox.timeout, sfox.cooldown, sfox.backoff) == (2.0, 3.5, 7.0, 0.25)
        assert isinstance(sfox.period, float)

    def test_other_venues_keep_defaults(self, tmp_path: Path) -> None:
        """Configuring one venue leaves the others at their defaults."""
        settings = load_settings({}, venues_config=toml(tmp_path, FULL_SFOX))
        defaults = load_settings({})
        for name in set(VENUES) - {"sfox"}:
            assert settings.venues[name] == defaults.venues[name]

    def test_partial_table(self, tmp_path: Path) -> None:
        """Keys not named keep their defaults."""
        text = '[venues.etna]\nbase_url = "https://broker.example/api"\n'
        etna = load_settings({}, venues_config=toml(tmp_path, text)).venues["etna"]
        assert etna.base_url == "https://broker.example/api"
        assert etna.rate_limit == VENUES["etna"].defaults.rate_limit
        assert etna.timeout == DEFAULT_TIMEOUT

    def test_whole_float_for_integer_key(self, tmp_path: Path) -> None:
        """rate_limit = 20.0 is the whole number 20."""
        sfox = load_settings(
            {}, venues_config=toml(tmp_path, "[venues.sfox]\nrate_limit = 20.0\n")
        ).venues["sfox"]
        assert sfox.rate_limit == 20 and isinstance(sfox.rate_limit, int)

    @pytest.mark.parametrize("key", ["rate_limit", "cooldown", "backoff"])
    def test_zero_allowed(self, tmp_path: Path, key: str) -> None:
        """rate_limit 0 (unthrottled), cooldown 0 and backoff 0 are allowed."""
        venue = load_settings(
            {}, venues_config=toml(tmp_path, f"[venues.tanx]\n{key} = 0\n")
        ).venues["tanx"]
        assert getattr(venue, key) == 0

    def test_overrides_beat_toml(self, tmp_path: Path) -> None:
        """Programmatic overrides (the demo's) beat the TOML."""
        settings = load_settings(
            {},
            venues_config=toml(tmp_path, FULL_SFOX),
            overrides={"sfox": {"rate_limit": 0, "timeout": 1.0}},
        )
        assert settings.venues["sfox"].rate_limit == 0
        assert settings.venues["sfox"].timeout == 1.0
        assert settings.venues["sfox"].max_in_flight == 4


class TestTomlErrors:
    def test_unknown_venue_table(self, tmp_path: Path) -> None:
        """A venue we have no adapter for is named, with the known ones."""
        message = config_error(tmp_path, "[venues.nyse]\nrate_limit = 1\n")
        assert "'nyse'" in message
        assert all(name in message for name in VENUES)

    def test_venue_names_are_exact(self, tmp_path: Path) -> None:
        """Table names are exact lower-case adapter names."""
        assert "'SFOX'" in config_error(tmp_path, "[venues.SFOX]\nrate_limit = 1\n")

    def test_unknown_top_level_table(self, tmp_path: Path) -> None:
        """Anything but [venues.*] at the top is a mistake, e.g. a forgotten 'venues.' prefix."""
        assert "sfox" in config_error(tmp_path, "[sfox]\nrate_limit = 1\n")

    @pytest.mark.parametrize("key", ["ratelimit", "rate-limit", "api_key", "retries"])
    def test_unknown_key(self, tmp_path: Path, key: str) -> None:
        """A misspelt or unsupported key is named, with the allowed ones."""
        message = config_error(tmp_path, f"[venues.sfox]\n{key} = 1\n")
        assert key in message
        assert "rate_limit" in message and "base_url" in message

    @pytest.mark.parametrize(
        ("text", "mentions"),
        [
            ("venues = 3\n", "venues"),
            ("[venues]\nsfox = 3\n", "sfox"),
        ],
        ids=["venues-not-table", "venue-not-table"],
    )
    def test_wrong_shape(self, tmp_path: Path, text: str, mentions: str) -> None:
        """`venues` and each venue must be tables."""
        assert mentions in config_error(tmp_path, text)

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("rate_limit", '"20"'),
            ("rate_limit", "true"),
            ("rate_limit", "2.5"),
            ("max_in_flight", "[4]"),
            ("period", '"1s"'),
            ("timeout", "false"),
            ("cooldown", "{ seconds = 1 }"),
            ("backoff", '"0.5"'),
            ("base_url", "5"),
            ("base_url", '"api.sfox.com"'),
            ("base_url", '"ftp://api.sfox.com"'),
        ],
    )
    def test_wrong_types(self, tmp_path: Path, key: str, value: str) -> None:
        """A value of the wrong type or form names its key."""
        message = config_error(tmp_path, f"[venues.sfox]\n{key} = {value}\n")
        assert key in message and "sfox" in message

    @pytest.mark.parametrize(
        "key", ["rate_limit", "period", "max_in_flight", "timeout", "cooldown", "backoff"]
    )
    def test_negative_numbers(self, tmp_path: Path, key: str) -> None:
        """No limit, time or count may be negative."""
        message = config_error(tmp_path, f"[venues.sfox]\n{key} = -1\n")
        assert key in message and "positive" in message

    @pytest.mark.parametrize("key", ["period", "max_in_flight", "timeout"])
    def test_zero_not_allowed(self, tmp_path: Path, key: str) -> None:
        """A zero period, concurrency or timeout cannot work."""
        assert key in config_error(tmp_path, f"[venues.sfox]\n{key} = 0\n")

    @pytest.mark.parametrize("key", ["period", "timeout", "cooldown", "backoff"])
    def test_nan_rejected(self, tmp_path: Path, key: str) -> None:
        """TOML's `nan` is no usable period, timeout, cooldown or backoff."""
        assert key in config_error(tmp_path, f"[venues.sfox]\n{key} = nan\n")

    def test_invalid_toml(self, tmp_path: Path) -> None:
        """A TOML syntax error names the file and where the error is, in one line."""
        message = config_error(tmp_path, "[venues.sfox\nrate_limit = 1\n")
        assert "not valid TOML" in message and "line 1" in message

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config path that does not exist is a ConfigError naming it."""
        path = tmp_path / "nope.toml"
        with pytest.raises(ConfigError, match="does not exist") as exc:
            load_settings({}, venues_config=str(path))
        assert str(path) in str(exc.value)

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is a one-line ConfigError, not an IsADirectoryError."""
        with pytest.raises(ConfigError, match="cannot be read") as exc:
            load_settings({}, venues_config=str(tmp_path))
        assert "\n" not in str(exc.value)

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A non-UTF-8 file is a one-line ConfigError."""
        path = tmp_path / "venues.toml"
        path.write_bytes(b'[venues.sfox]\nbase_url = "http://caf\xe9"\n')
        with pytest.raises(ConfigError, match="cannot be read") as exc:
            load_settings({}, venues_config=str(path))
        assert "\n" not in str(exc.value)

    def test_config_error_is_usage_error(self) -> None:
        """ConfigError means exit 2: nothing was sent."""
        assert issubclass(ConfigError, InputError)
        assert ConfigError.exit_code == 2


class TestEnvironment:
    def test_venues_var(self, tmp_path: Path) -> None:
        """BATCHCANCEL_VENUES names the TOML when no flag does."""
        settings = load_settings({VENUES_VAR: toml(tmp_path, FULL_SFOX)})
        assert settings.venues["sfox"].rate_limit == 20

    def test_db_var(self) -> None:
        """BATCHCANCEL_DB selects the audit database when no flag does."""
        assert load_settings({DB_VAR: "sqlite:////tmp/x.db"}).db_url == "sqlite:////tmp/x.db"

    def test_db_flag_beats_env(self) -> None:
        """--db wins over BATCHCANCEL_DB."""
        settings = load_settings({DB_VAR: "sqlite:///env.db"}, db_url="sqlite:///flag.db")
        assert settings.db_url == "sqlite:///flag.db"

    def test_venues_flag_beats_env(self, tmp_path: Path) -> None:
        """--venues-config wins over BATCHCANCEL_VENUES; the env file is not even read."""
        broken = toml(tmp_path, "not toml at all [", name="env.toml")
        flag = toml(tmp_path, FULL_SFOX, name="flag.toml")
        settings = load_settings({VENUES_VAR: broken}, venues_config=flag)
        assert settings.venues["sfox"].rate_limit == 20

    def test_env_venues_error_surfaces(self, tmp_path: Path) -> None:
        """A broken file named by BATCHCANCEL_VENUES is a ConfigError, not ignored."""
        broken = toml(tmp_path, "[venues.sfox]\nrate_limit = -5\n")
        with pytest.raises(ConfigError, match="rate_limit"):
            load_settings({VENUES_VAR: broken})

    @pytest.mark.parametrize("var", [DB_VAR, VENUES_VAR])
    def test_empty_variable_is_unset(self, var: str) -> None:
        """An empty variable counts as not set."""
        assert load_settings({var: ""}) == load_settings({})


class TestProcessEnvironment:
    """config.py is the one reader of this process's environment: the functions the CLI and
    the run lifecycle call instead of os.environ."""

    def test_debug_and_metrics_interval(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """BATCHCANCEL_DEBUG turns the traceback on; a bad metrics interval is the default."""
        monkeypatch.delenv(config.DEBUG_VAR, raising=False)
        assert not config.debug_enabled()
        monkeypatch.setenv(config.DEBUG_VAR, "1")
        assert config.debug_enabled()
        monkeypatch.setenv(config.METRICS_INTERVAL_VAR, "0.5")
        assert config.metrics_interval(5.0) == 0.5
        monkeypatch.setenv(config.METRICS_INTERVAL_VAR, "soon")
        assert config.metrics_interval(5.0) == 5.0

    def test_a_run_keeps_its_recorded_venues_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A command on an existing run reads the venues config the run recorded, unless one
        is given now by flag or by BATCHCANCEL_VENUES: then the command's own settings."""
        monkeypatch.delenv(VENUES_VAR, raising=False)
        recorded = toml(tmp_path, FULL_SFOX, name="recorded.toml")
        loaded = load_settings({})
        restored = config.settings_for_run(recorded, db_url=None, venues_config=None, loaded=loaded)
        assert restored.venues["sfox"].rate_limit == 20
        flag = config.settings_for_run(recorded, db_url=None, venues_config="x", loaded=loaded)
        assert flag is loaded
        assert config.settings_for_run(None, db_url=None, venues_config=None, loaded=loaded) is (
            loaded
        )
        monkeypatch.setenv(VENUES_VAR, recorded)
        env = config.settings_for_run(recorded, db_url=None, venues_config=None, loaded=loaded)
        assert env is loaded

    def test_credentials_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """For redaction before the venues file is read: the environment's credentials, or
        None when one is unusable (the command reports that itself)."""
        var = VENUES["sfox"].credential_vars[0]
        monkeypatch.setenv(var, "tok-123456")
        found = config.environment_credentials()
        assert found is not None and "tok-123456" in found.secrets
        assert config.credential_is_set(var)
        monkeypatch.setenv(var, "tok\n123")
        assert config.environment_credentials() is None


class TestCredentials:
    def test_each_venue_gets_its_variables(self) -> None:
        """Every credential variable lands on its own venue, and only there."""
        settings = load_settings(dict(CREDENTIALS))
        for name, venue_class in VENUES.items():
            expected = {v: CREDENTIALS[v] for v in venue_class.credential_vars}
            assert dict(settings.venues[name].credentials) == expected

    def test_only_exact_variable_names(self) -> None:
        """Look-alike names are ignored: credentials come only from their variables."""
        environ = {
            "SFOX_API_KEY": "lookalike-1",
            "BATCHCANCEL_SFOX_KEY": "lookalike-2",
            "batchcancel_sfox_api_key": "lookalike-3",
            "BATCHCANCEL_SFOX_API_KEY_OLD": "lookalike-4",
            "BATCHCANCEL_CRUX_TOKEN": CREDENTIALS["BATCHCANCEL_CRUX_TOKEN"],
        }
        settings = load_settings(environ)
        assert dict(settings.venues["sfox"].credentials) == {}
        assert settings.secrets == (CREDENTIALS["BATCHCANCEL_CRUX_TOKEN"],)

    def test_empty_variable_is_no_credential(self) -> None:
        """An empty variable is as good as unset."""
        settings = load_settings({"BATCHCANCEL_SFOX_API_KEY": ""})
        assert dict(settings.venues["sfox"].credentials) == {}
        assert settings.secrets == ()

    def test_not_from_toml(self, tmp_path: Path) -> None:
        """A credential in the TOML is refused, and its value is not echoed."""
        secret = CREDENTIALS["BATCHCANCEL_SFOX_API_KEY"]
        message = config_error(tmp_path, f'[venues.sfox]\napi_key = "{secret}"\n')
        assert secret not in message

    def test_secrets_lists_all_values(self) -> None:
        """Settings.secrets holds every credential value, for redaction."""
        assert sorted(load_settings(dict(CREDENTIALS)).secrets) == sorted(SECRET_VALUES)

    def test_not_in_repr(self, tmp_path: Path) -> None:
        """No credential value appears in repr() or str() of the settings or a venue's."""
        settings = load_settings(
            {**CREDENTIALS, VENUES_VAR: toml(tmp_path, FULL_SFOX)}, db_url="sqlite:///x.db"
        )
        texts = [repr(settings), str(settings)]
        texts += [repr(v) for v in settings.venues.values()]
        texts += [str(v) for v in settings.venues.values()]
        for text in texts:
            for secret in SECRET_VALUES:
                assert secret not in text
        assert "sfox" in repr(settings) and "x.db" in repr(settings)

    @pytest.mark.parametrize(
        ("var", "tail"),
        [
            ("BATCHCANCEL_SFOX_API_KEY", "\r\nX-Injected: 1"),
            ("BATCHCANCEL_SFOX_API_KEY", "\n"),
            ("BATCHCANCEL_ETNA_APP_KEY", "\r"),
            ("BATCHCANCEL_ETNA_TOKEN", "\x00"),
            ("BATCHCANCEL_CRUX_TOKEN", "\t"),
            ("BATCHCANCEL_TANX_JWT", "\x1b[2J"),
            ("BATCHCANCEL_ZEBPAY_JWT", "\x7f"),
            ("BATCHCANCEL_ZEBPAY_API_KEY", "\x85"),
            ("BATCHCANCEL_ZEBPAY_API_SECRET", "\n"),
        ],
    )
    def test_control_characters_refused(self, var: str, tail: str) -> None:
        """A credential that cannot travel in an HTTP header (CR, LF, NUL, any control
        character) is a ConfigError naming the variable, in one line, without its value."""
        value = CREDENTIALS[var] + tail
        with pytest.raises(ConfigError) as exc:
            load_settings({**CREDENTIALS, var: value})
        message = str(exc.value)
        assert var in message
        assert "\n" not in message and "\r" not in message
        assert CREDENTIALS[var] not in message and tail not in message

    def test_every_set_variable_is_checked(self) -> None:
        """A bad value in a set variable is an error even if only other venues are used:
        settings are built before the order list says which venues a run needs."""
        environ = {
            "BATCHCANCEL_SFOX_API_KEY": CREDENTIALS["BATCHCANCEL_SFOX_API_KEY"],
            "BATCHCANCEL_TANX_JWT": "tanx-SECRET\n",
        }
        with pytest.raises(ConfigError, match="BATCHCANCEL_TANX_JWT"):
            load_settings(environ)

    def test_printable_values_are_kept(self) -> None:
        """Spaces and non-ASCII letters are no control characters: kept exactly."""
        settings = load_settings({"BATCHCANCEL_CRUX_TOKEN": " tok en-é "})
        assert dict(settings.venues["crux"].credentials) == {"BATCHCANCEL_CRUX_TOKEN": " tok en-é "}

    def test_settings_are_frozen(self) -> None:
        """Settings cannot be changed after they were built."""
        settings = load_settings({})
        with pytest.raises(AttributeError):
            settings.db_url = "sqlite:///other.db"  # type: ignore[misc]
        assert isinstance(settings, Settings)


def _cli(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
    return subprocess.run(
        [sys.executable, "-m", "batchcancel", *args, "--db", f"sqlite:///{tmp_path}/a.db"],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


class TestCli:
    @pytest.mark.parametrize(
        "var", ["BATCHCANCEL_SFOX_API_KEY", "BATCHCANCEL_TANX_JWT"], ids=["used", "other-venue"]
    )
    async def test_credential_with_newline_exits_2(
        self, tmp_path: Path, serve_simulators: ServeSimulators, var: str
    ) -> None:
        """A CR/LF in a credential: exit 2, one line naming the variable, its value nowhere
        in stdout or stderr, and the simulator received nothing."""
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({str(n): OrderState.OPEN for n in range(1, 6)})
        orders = write_orders_csv(
            tmp_path / "orders.csv", [{"venue": "sfox", "order_id": str(n)} for n in range(1, 6)]
        )
        bad = {**CREDENTIALS, var: CREDENTIALS[var] + "\r\nX-Injected: 1"}
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            result = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                env=cli_env(tmp_path / "a.db", credentials=bad),
            )
        assert result.code == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("batchcancel: error:"), result.stderr
        assert var in lines[0]
        assert CREDENTIALS[var] not in result.stdout + result.stderr
        assert "X-Injected" not in result.stdout + result.stderr
        assert simulator.total_requests == 0
        assert not (tmp_path / "a.db").exists()

    def test_bad_env_config_exits_2(self, tmp_path: Path) -> None:
        """A broken TOML named by BATCHCANCEL_VENUES: exit 2, one line, no audit database."""
        orders = tmp_path / "orders.csv"
        orders.write_text("venue,order_id\nsfox,1\n", encoding="utf-8")
        bad = toml(tmp_path, "[venues.sfox]\nrate_limit = -1\n")
        result = _cli(tmp_path, "run", str(orders), env={VENUES_VAR: bad})
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("batchcancel: error:")
        assert "rate_limit" in lines[0]
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "a.db").exists()

    def test_flag_beats_env_in_cli(self, tmp_path: Path) -> None:
        """--venues-config wins over a broken BATCHCANCEL_VENUES; rate_limit 0 is unthrottled."""
        orders = tmp_path / "orders.csv"
        orders.write_text("venue,order_id\nsfox,1\nsfox,2\n", encoding="utf-8")
        broken = toml(tmp_path, "[venues.nyse]\n", name="env.toml")
        good = toml(tmp_path, "[venues.sfox]\nrate_limit = 0\n", name="flag.toml")
        result = _cli(
            tmp_path,
            "run",
            str(orders),
            "--venues-config",
            good,
            "--dry-run",
            env={VENUES_VAR: broken},
        )
        assert result.returncode == 0, result.stderr
        assert "sfox: 2 orders, unthrottled" in result.stderr
