"""Plugins from the plugin path: .py files, wheels, broken ones reported by name."""

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.backend.plugins import get_plugin_manager

ROOT = Path(__file__).parents[2]
BROKEN = ROOT / "tests" / "fixtures" / "broken_plugins"


def infos_by_name(plugins):
    return {info.name: info for info in plugins.infos}


@pytest.fixture(scope="module")
def broken():
    return infos_by_name(get_plugin_manager([str(BROKEN)]))


def test_a_plugin_that_fails_to_import_is_reported_by_name(broken):
    assert "flowfabric_dependency_that_does_not_exist" in broken["ff_broken_import"].error
    assert str(BROKEN) in broken["ff_broken_import"].source


def test_a_hook_with_a_wrong_signature_is_reported(broken):
    assert "region" in broken["ff_bad_signature"].error


def test_a_misspelt_hook_is_reported(broken):
    assert "flowfabric_backendd" in broken["ff_unknown_hook"].error


def test_a_duplicate_backend_name_is_reported_and_the_first_provider_kept(broken):
    assert "already provided by plugin 'sqlite'" in broken["ff_duplicate_sqlite"].error
    assert broken["sqlite"].error is None


def test_broken_plugins_do_not_remove_working_backends():
    plugins = get_plugin_manager([str(BROKEN)])
    assert {"sqlite", "valkey", "postgres"} <= set(plugins.backend_names())


def test_a_missing_plugin_path_entry_is_reported(tmp_path):
    infos = infos_by_name(get_plugin_manager([str(tmp_path / "nowhere")]))
    assert "no such file or folder" in infos[str(tmp_path / "nowhere")].error


def test_a_py_file_on_the_plugin_path_provides_a_backend(tmp_path):
    (tmp_path / "ff_path_demo.py").write_text(
        "from appliance.backend import hookimpl\n"
        "from flowfabric_memory import MemoryBackend\n"
        "@hookimpl\ndef flowfabric_backend_names():\n    return ['path-demo']\n"
        "@hookimpl\ndef flowfabric_backend(name, config):\n"
        "    return MemoryBackend() if name == 'path-demo' else None\n")
    plugins = get_plugin_manager([str(tmp_path)])
    assert "path-demo" in plugins.backend_names()
    assert infos_by_name(plugins)["ff_path_demo"].source == f"file {tmp_path / 'ff_path_demo.py'}"


def test_a_wheel_on_the_plugin_path_is_listed_by_the_cli(example_wheel):
    listing = subprocess.run([sys.executable, "-m", "appliance", "plugins", "--plugin-path",
                              str(example_wheel)], capture_output=True, text=True, check=True)
    # From source the installed distribution wins; the wheel's copy is not registered twice.
    assert listing.stdout.count("backends: memory") == 1


def test_the_cli_lists_broken_plugins_with_the_reason():
    listing = subprocess.run([sys.executable, "-m", "appliance", "plugins", "--plugin-path",
                              str(BROKEN)], capture_output=True, text=True)
    assert listing.returncode == 0
    assert "ff_broken_import" in listing.stdout and "BROKEN" in listing.stdout
    assert "sqlite 0.1.0  backends: sqlite  [ok]" in listing.stdout
