"""The plugin API: each hook documented and exercised, the public names pinned."""

import re
from pathlib import Path

import pytest

import appliance.backend
from appliance.backend import BackendBase, Setting, hookimpl, hookspecs
from appliance.backend.plugins import get_plugin_manager
from appliance.config import load_config
from appliance.core.errors import StartupError

GUIDE = (Path(__file__).parents[2] / "spec" / "plugins.md").read_text(encoding="utf-8")
HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("flowfabric_"))


class Store(BackendBase):
    name = "hooked"


class HookedPlugin:
    @hookimpl
    def flowfabric_backend_names(self):
        return ["hooked"]

    @hookimpl
    def flowfabric_backend(self, name, config):
        return Store() if name == "hooked" else None


def test_the_public_plugin_api_is_pinned():
    assert sorted(appliance.backend.__all__) == [
        "Applied", "BASIC", "Backend", "BackendBase", "BackendEnv", "Claim", "Mutation", "OPERATIONS",
        "Setting", "hookimpl", "hookspec"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_with_its_signature_in_the_guide(hook):
    assert re.search(rf"^### `{hook}`$", GUIDE, re.M), f"spec/plugins.md lacks ### `{hook}`"
    assert f"def {hook}(" in GUIDE


def test_hook_flowfabric_backend_names():
    plugins = get_plugin_manager()
    info = plugins.register(HookedPlugin(), "hooked-plugin", "test")
    assert info.error is None and info.backends == ["hooked"]
    assert "hooked" in plugins.backend_names()


def test_hook_flowfabric_backend():
    plugins = get_plugin_manager()
    plugins.register(HookedPlugin(), "hooked-plugin", "test")
    backend = plugins.make_backend("hooked", load_config({}))
    assert isinstance(backend, Store)
    assert backend.capabilities() == frozenset()  # nothing overridden: every op Unavailable


class SettingsPlugin(HookedPlugin):
    @hookimpl
    def flowfabric_settings(self):
        return [Setting("FF_HOOKED_URL", "hooked://here", "where the store is", "--hooked-url")]


def test_hook_flowfabric_settings():
    plugins = get_plugin_manager()
    info = plugins.register(SettingsPlugin(), "hooked-plugin", "test")
    assert info.error is None
    assert [s.env for s in info.settings] == ["FF_HOOKED_URL"]
    assert "FF_HOOKED_URL" in {s.env for s in plugins.declared()}
    answers = plugins.pm.hook.flowfabric_settings()  # one list per plugin that has the hook
    assert ["FF_HOOKED_URL"] in [[s.env for s in answer] for answer in answers]


def test_a_plugin_without_the_settings_hook_declares_nothing():
    plugins = get_plugin_manager()
    info = plugins.register(HookedPlugin(), "hooked-plugin", "test")
    assert (info.error, info.settings) == (None, [])


def test_a_backend_nobody_provides_names_the_ones_that_exist():
    with pytest.raises(StartupError, match=r"unknown backend 'nope'.*sqlite"):
        get_plugin_manager().make_backend("nope", load_config({}))
