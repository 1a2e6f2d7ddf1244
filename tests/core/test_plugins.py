"""Backend plugin discovery, broken plugins, and the `plugins` / `--version` CLI."""

import subprocess
import sys

import pytest

from appliance import __version__
from appliance.backend import Setting, hookimpl
from appliance.backend.plugins import get_plugin_manager
from appliance.backend.protocol import BackendBase
from appliance.config import load_config
from appliance.core.errors import StartupError


class NamesRaise:
    @hookimpl
    def flowfabric_backend_names(self):
        raise RuntimeError("plugin bug")


class ClaimsSqlite:
    @hookimpl
    def flowfabric_backend_names(self):
        return ["sqlite"]

    @hookimpl
    def flowfabric_backend(self, name, config):
        return None


class UnknownHook:
    @hookimpl
    def flowfabric_not_a_hook(self):
        return None


class FakeBackend(BackendBase):
    name = "fake"


class Provides:
    def __init__(self, name, build):
        self.backend_name, self.build = name, build

    @hookimpl
    def flowfabric_backend_names(self):
        return [self.backend_name]

    @hookimpl
    def flowfabric_backend(self, name, config):
        return self.build() if name == self.backend_name else None


class Declares:
    """A plugin that only declares settings: legitimate, but it provides no backend."""

    def __init__(self, *settings):
        self.settings = list(settings)

    @hookimpl
    def flowfabric_settings(self):
        return self.settings


def _boom():
    raise ValueError("cannot connect")


@pytest.fixture
def plugins():
    return get_plugin_manager()


@pytest.fixture
def config(tmp_path):
    return load_config({"FF_SQLITE_PATH": str(tmp_path / "p.db")})


def test_sqlite_is_found_through_its_entry_point(plugins):
    assert "sqlite" in plugins.backend_names()
    info = next(i for i in plugins.infos if i.name == "sqlite")
    assert (info.backends, info.error) == (["sqlite"], None)
    assert "entry point" in info.source
    assert info.version == __version__


def test_make_backend_builds_sqlite(plugins, config):
    backend = plugins.make_backend("sqlite", config)
    assert isinstance(backend, BackendBase)
    assert backend.name == "sqlite"


def test_unknown_backend_lists_the_available_ones(plugins, config):
    with pytest.raises(StartupError) as err:
        plugins.make_backend("nope", config)
    message = str(err.value)
    assert "'nope'" in message and "sqlite" in message
    assert "FF_BACKEND" in message


def test_plugin_whose_names_hook_raises_is_recorded_and_harmless(plugins, config):
    plugin = NamesRaise()
    info = plugins.register(plugin, "broken", "test")
    assert info.error == "RuntimeError: plugin bug"
    assert info.backends == []
    assert not plugins.pm.is_registered(plugin)
    assert "sqlite" in plugins.backend_names()
    assert plugins.make_backend("sqlite", config).name == "sqlite"


def test_plugin_claiming_a_taken_name_is_refused(plugins, config):
    plugin = ClaimsSqlite()
    info = plugins.register(plugin, "impostor", "test")
    assert "already provided by plugin 'sqlite'" in info.error
    assert not plugins.pm.is_registered(plugin)
    assert plugins.owners["sqlite"] == "sqlite"
    assert plugins.make_backend("sqlite", config).name == "sqlite"


def test_plugin_with_an_unknown_hook_is_recorded(plugins):
    plugin = UnknownHook()
    info = plugins.register(plugin, "typo", "test")
    assert info.error and "flowfabric_not_a_hook" in info.error
    assert not plugins.pm.is_registered(plugin)
    assert "sqlite" in plugins.backend_names()


def test_broken_plugins_are_named_when_a_backend_is_missing(plugins, config):
    plugins.register(NamesRaise(), "broken", "somewhere")
    with pytest.raises(StartupError, match="plugin 'broken' \\(somewhere\\) failed") as err:
        plugins.make_backend("nope", config)
    assert "\n" not in str(err.value)


def test_a_plugin_may_declare_settings_and_no_backend(plugins):
    info = plugins.register(Declares(Setting("FF_EXTRA_KNOB", "1", "a knob")), "extra", "test")
    assert (info.error, info.backends) == (None, [])
    assert "FF_EXTRA_KNOB" in {s.env for s in plugins.declared()}


@pytest.mark.parametrize("setting, why", [
    (Setting("FF_SQLITE_PATH", None, "mine"), "already declared by plugin 'sqlite'"),
    (Setting("FF_LISTEN_ADDR", None, "mine"), "already declared by the appliance"),
    (Setting("FF_MINE", None, "mine", "--sqlite-path"), "already used by plugin 'sqlite'"),
    (Setting("FF_MINE", None, "mine", "--set"), "already used by the appliance"),
    (Setting("FF_MINE", None, "mine", "mine"), "must look like --mystore-url"),
    (Setting("ff_mine", None, "mine"), "must look like FF_MYSTORE_URL"),
    (Setting("FF_TEST_MINE", None, "mine"), "FF_TEST_* is reserved"),
    ("FF_MINE", "return appliance.backend.Setting values"),
])
def test_a_plugin_declaring_a_taken_or_malformed_setting_is_refused(plugins, setting, why):
    plugin = Declares(setting)
    info = plugins.register(plugin, "greedy", "test")
    assert why in info.error
    assert not plugins.pm.is_registered(plugin)
    assert "greedy" in plugins.broken()


def test_a_setting_declared_twice_by_one_plugin_is_refused(plugins):
    twice = Declares(Setting("FF_MINE", None, "a"), Setting("FF_MINE", None, "b"))
    assert "already declared by this plugin" in plugins.register(twice, "twice", "test").error


def test_the_in_tree_plugins_declare_their_settings(plugins):
    declared = {info.name: [s.env for s in info.settings] for info in plugins.infos}
    assert declared["sqlite"] == ["FF_SQLITE_PATH"]
    assert declared["valkey"] == ["FF_VALKEY_URL", "FF_HOST", "FF_PORT", "FF_TLS", "FF_CLUSTER"]
    assert declared["postgres"] == ["FF_POSTGRES_URL", "FF_POSTGRES_POOL_SIZE",
                                    "FF_POSTGRES_CONNECT_TIMEOUT_MS"]


def test_a_new_plugin_adds_its_backend(plugins, config):
    info = plugins.register(Provides("fake", FakeBackend), "fakeplug", "test", "9.9")
    assert (info.error, info.backends) == (None, ["fake"])
    assert "fake" in plugins.backend_names()
    assert plugins.backend_names() == sorted(plugins.backend_names())
    assert isinstance(plugins.make_backend("fake", config), FakeBackend)


def test_backend_factory_error_becomes_a_startup_error(plugins, config):
    plugins.register(Provides("flaky", _boom), "flakyplug", "test")
    with pytest.raises(StartupError, match="'flakyplug' failed to build backend 'flaky'.*"
                                           "cannot connect"):
        plugins.make_backend("flaky", config)


def test_factory_returning_a_non_backend_is_refused(plugins, config):
    plugins.register(Provides("odd", object), "oddplug", "test")
    with pytest.raises(StartupError, match="expected a BackendBase subclass"):
        plugins.make_backend("odd", config)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, timeout=60)


def test_plugins_command_lists_sqlite():
    proc = _run("plugins")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("sqlite "))
    assert "backends: sqlite" in line and "[ok]" in line
    assert "    settings: FF_SQLITE_PATH" in proc.stdout


def test_plugins_command_says_when_a_plugin_registers_no_backend(tmp_path):
    (tmp_path / "ff_knobs.py").write_text(
        "from appliance.backend import Setting, hookimpl\n"
        "@hookimpl\ndef flowfabric_settings():\n    return [Setting('FF_KNOB', None, 'x')]\n")
    proc = _run("plugins", "--plugin-path", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("ff_knobs "))
    assert "backends: -" in line and "[ok: registers no backend]" in line


def test_version_flag_prints_the_version():
    proc = _run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"flowfabric {__version__}"
