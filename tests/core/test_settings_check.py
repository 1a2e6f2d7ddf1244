"""Unknown FF_* names are refused with a did-you-mean; plugin settings show up in the CLI."""

import subprocess
import sys

import flowfabric_postgres
import pluggy
import pytest

from appliance import cli
from appliance.backend import Setting, hookimpl, hookspecs
from appliance.backend.plugins import Plugins, get_plugin_manager
from appliance.config import check_names, load_config
from appliance.core.errors import StartupError


class Knobs:
    """A third-party plugin with a flag-bearing setting and no backend."""

    @hookimpl
    def flowfabric_settings(self):
        return [Setting("FF_KNOB_LEVEL", "3", "how far to turn it", "--knob-level")]


@pytest.fixture(scope="module")
def plugins():
    found = get_plugin_manager()
    found.register(Knobs(), "knobs", "test")
    return found


def refused(env=None, set_names=(), plugins=None, broken=()):
    declared = plugins.declared() if plugins else ()
    with pytest.raises(StartupError) as err:
        check_names(env or {}, set_names, declared, broken)
    message = str(err.value)
    assert "\n" not in message
    assert message.endswith("'flowfabric serve --help' lists every setting") or broken
    return message


def test_a_misspelt_environment_variable_gets_a_did_you_mean(plugins):
    assert refused({"FF_SQLITE_PAHT": "x.db"}, plugins=plugins) == (
        "unknown setting FF_SQLITE_PAHT (environment); did you mean FF_SQLITE_PATH? "
        "'flowfabric serve --help' lists every setting")


def test_an_unknown_set_name_says_to_remove_it(plugins):
    message = refused(set_names=["FF_NOPE"], plugins=plugins)
    assert message.startswith("unknown setting FF_NOPE (--set); remove it, or load the plugin")


def test_an_unknown_environment_variable_says_to_unset_it():
    assert refused({"FF_NOPE": "1"}).startswith("unknown setting FF_NOPE (environment); unset it")


def test_several_unknown_names_are_one_line():
    message = refused({"FF_LOGLEVEL": "debug"}, ["FF_LISTEN"])
    assert message.startswith("unknown settings FF_LISTEN (--set; did you mean FF_LISTEN_ADDR?), "
                              "FF_LOGLEVEL (environment; did you mean FF_LOG_LEVEL?);")


def test_broken_plugins_are_named_as_a_possible_owner():
    assert "plugin 'ff_mystore' failed to load" in refused({"FF_MYSTORE_URL": "x"},
                                                           broken=["ff_mystore"])


def test_declared_names_pass(plugins):
    check_names({"FF_SQLITE_PATH": "a.db", "FF_VALKEY_URL": "redis://h", "FF_KNOB_LEVEL": "2",
                 "FF_LOG_LEVEL": "debug"}, ["FF_POSTGRES_CONNECT_TIMEOUT_MS"],
                plugins.declared())


def test_plugin_names_are_unknown_without_the_plugin():
    assert "FF_KNOB_LEVEL (environment)" in refused({"FF_KNOB_LEVEL": "2"})


def test_test_suite_variables_in_the_environment_are_ignored_but_not_in_set():
    check_names({"FF_TEST_FROZEN_BINARY": "/x", "FF_TEST_POSTGRES_ADMIN_URL": "postgresql://"},
                [])
    assert "FF_TEST_ANYTHING (--set)" in refused(set_names=["FF_TEST_ANYTHING"])


def test_other_variables_are_not_checked():
    check_names({"PATH": "/bin", "ff_lowercase": "1", "XFF_NOPE": "1"}, [])


def test_load_config_still_passes_unchecked_names_through():
    """Programmatic callers (tests, the harness) use load_config alone."""
    assert load_config({"FF_MYSTORE_URL": "x"}).option("FF_MYSTORE_URL") == "x"


def test_help_lists_backends_and_each_plugins_settings_with_defaults(plugins):
    text = cli.build_parser(plugins).format_help()
    assert "Backends found: memory, postgres, sqlite, valkey" in text
    assert "  sqlite (backends: sqlite):\n    FF_SQLITE_PATH" in text
    assert "(default: flowfabric.db)" in text
    assert "FF_POSTGRES_CONNECT_TIMEOUT_MS" in text and "(default: 1000)" in text
    assert "  knobs (no backend):\n    FF_KNOB_LEVEL" in text
    assert "  memory (backends: memory): no settings" in text


def test_a_plugin_flag_becomes_a_serve_option(plugins):
    args = cli.build_parser(plugins).parse_args(["serve", "--knob-level", "5",
                                                 "--sqlite-path", "x.db"])
    assert (args.FF_KNOB_LEVEL, args.FF_SQLITE_PATH) == ("5", "x.db")


def test_without_plugins_the_parser_still_builds():
    assert "Backends found" not in cli.build_parser().format_help()


def test_the_plugin_path_is_read_before_parsing(monkeypatch):
    monkeypatch.setenv("FF_PLUGIN_PATH", "/env")
    assert cli._early_plugin_path(["serve", "--help", "--plugin-path", "/a",
                                   "--plugin-path=/b"]) == ["/env", "/a", "/b"]
    assert cli._early_plugin_path(["serve", "--set", "FF_PLUGIN_PATH=/s"]) == ["/s"]
    assert cli._early_plugin_path(["serve", "--plugin-path"]) == ["/env"]  # argparse reports it


def test_plugins_listing_fails_when_no_plugin_provides_a_backend(capsys):
    only_knobs = Plugins(pluggy.PluginManager("flowfabric"))
    only_knobs.pm.add_hookspecs(hookspecs)
    only_knobs.register(Knobs(), "knobs", "test")
    assert cli.show_plugins(only_knobs) == 1
    assert "[ok: registers no backend]" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["49", "60001", "1.5", "soon", "-1"])
def test_postgres_connect_timeout_is_validated_naming_the_variable(value):
    config = load_config({"FF_POSTGRES_URL": "postgresql://u@h/db",
                          "FF_POSTGRES_CONNECT_TIMEOUT_MS": value})
    with pytest.raises(StartupError, match=r"FF_POSTGRES_CONNECT_TIMEOUT_MS: must be a whole "
                                           r"number of milliseconds from 50 to 60000"):
        flowfabric_postgres.flowfabric_backend(name="postgres", config=config)


@pytest.mark.parametrize("value, seconds", [(None, 1.0), ("50", 0.05), ("60000", 60.0)])
def test_postgres_connect_timeout_reaches_the_backend_in_seconds(monkeypatch, value, seconds):
    import flowfabric_postgres.backend

    built = {}
    monkeypatch.setattr(flowfabric_postgres.backend, "PostgresBackend",
                        lambda url, **kwargs: built.update(kwargs, url=url))
    options = {"FF_POSTGRES_URL": "postgresql://u@h/db"}
    if value is not None:
        options["FF_POSTGRES_CONNECT_TIMEOUT_MS"] = value
    flowfabric_postgres.flowfabric_backend(name="postgres", config=load_config(options))
    assert built == {"url": "postgresql://u@h/db", "pool_size": 10, "connect_timeout_s": seconds}


def test_help_stays_fast_no_driver_is_imported():
    """Building --help loads every plugin's settings but none of the backends' drivers."""
    probe = ("import sys\nfrom appliance import cli\n"
             "cli.build_parser(cli.load_plugins([])).format_help()\n"
             "print(sorted(m for m in ('redis', 'psycopg', 'hypercorn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"
