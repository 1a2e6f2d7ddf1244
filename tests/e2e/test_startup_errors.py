"""Every startup mistake is one `flowfabric: error:` line naming the setting and the fix.

Each case runs the real CLI, which refuses before it serves: exit code 1, stderr exactly
one line, no traceback.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

EPHEMERAL = ("serve", "--listen", "127.0.0.1:0")
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
KNOB_PLUGIN = ("from appliance.backend import Setting, hookimpl\n"
               "@hookimpl\ndef flowfabric_settings():\n"
               "    return [Setting('FF_KNOB_LEVEL', '3', 'how far to turn the knob')]\n")


def cli(cwd: Path, *args: str, env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """The CLI in ``cwd`` with only the given FF_* variables."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
    child_env.update(env or {})
    return subprocess.run([*prefix, sys.executable, "-m", "appliance", *args], cwd=cwd,
                          env=child_env, capture_output=True, text=True, timeout=30)


def refusal(cwd: Path, *args: str, env: Mapping[str, str] | None = None,
            prefix: Sequence[str] = ()) -> str:
    """Run ``serve`` expecting a refusal; returns the one error line."""
    proc = cli(cwd, *EPHEMERAL, *args, env=env, prefix=prefix)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("flowfabric: error: "), proc.stderr
    return lines[0].removeprefix("flowfabric: error: ")


@pytest.fixture
def unprivileged(tmp_path: Path) -> Iterator[tuple[Sequence[str], Path]]:
    """A command prefix that runs the CLI as a user without special rights, and a folder
    that user can enter; as root that needs setpriv (root ignores file permissions)."""
    if os.geteuid() != 0:
        yield (), tmp_path
        return
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot test file permissions")
    folder = Path(tempfile.mkdtemp(prefix="ff-perm-"))
    folder.chmod(0o777)
    try:
        yield NOBODY, folder
    finally:
        shutil.rmtree(folder)


# -- FF_SQLITE_PATH / --sqlite-path ---------------------------------------------------------

def test_a_folder_as_the_sqlite_path(tmp_path):
    (tmp_path / "data").mkdir()
    line = refusal(tmp_path, "--sqlite-path", "data")
    assert line == (f"FF_SQLITE_PATH (--sqlite-path) names a folder: {tmp_path / 'data'}; "
                    f"give a file path such as {tmp_path / 'data' / 'flowfabric.db'}")
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]  # not even a lock file


def test_a_folder_in_the_environment(tmp_path):
    line = refusal(tmp_path, env={"FF_SQLITE_PATH": str(tmp_path)})
    assert line.startswith("FF_SQLITE_PATH (--sqlite-path) names a folder")


def test_a_file_that_is_not_a_database(tmp_path):
    (tmp_path / "notes.txt").write_text("shopping list\n" * 20)
    line = refusal(tmp_path, "--sqlite-path", "notes.txt")
    assert line == (f"FF_SQLITE_PATH (--sqlite-path) {tmp_path / 'notes.txt'} is not a SQLite "
                    f"database (file is not a database); move it away or set FF_SQLITE_PATH / "
                    f"--sqlite-path to another file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_another_programs_database_is_not_migrated(tmp_path):
    theirs = tmp_path / "app.db"
    with sqlite3.connect(theirs) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    line = refusal(tmp_path, "--sqlite-path", str(theirs))
    assert line == (f"FF_SQLITE_PATH (--sqlite-path) {theirs} is another program's SQLite "
                    f"database (tables users; no ff_schema_version); FlowFabric will not add its "
                    f"tables to it: set FF_SQLITE_PATH / --sqlite-path to another file")
    with sqlite3.connect(theirs) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["users"]


def test_a_missing_folder(tmp_path):
    line = refusal(tmp_path, "--sqlite-path", "nowhere/ff.db")
    assert line == (f"FF_SQLITE_PATH (--sqlite-path) is {tmp_path / 'nowhere' / 'ff.db'}, but "
                    f"{tmp_path / 'nowhere'} does not exist; create the folder or set "
                    f"FF_SQLITE_PATH / --sqlite-path to a file in an existing folder")


def test_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "plain").write_text("x")
    line = refusal(tmp_path, "--sqlite-path", "plain/ff.db")
    assert f"but {tmp_path / 'plain'} is not a folder; create the folder" in line


def test_a_file_this_user_may_not_read_and_write(unprivileged):
    prefix, folder = unprivileged
    store = folder / "locked.db"
    store.write_bytes(b"")
    store.chmod(0o000 if not prefix else 0o600)  # as root: a root-owned file nobody may open
    line = refusal(folder, "--sqlite-path", str(store), prefix=prefix)
    assert line == (f"FF_SQLITE_PATH (--sqlite-path) {store} is not readable and writable by "
                    f"this user; give it read and write permission (chmod u+rw) or set "
                    f"FF_SQLITE_PATH / --sqlite-path to another file")


def test_a_folder_this_user_may_not_write(unprivileged):
    prefix, folder = unprivileged
    (folder / "ro").mkdir()
    (folder / "ro").chmod(0o555)
    line = refusal(folder, "--sqlite-path", "ro/ff.db", prefix=prefix)
    assert line.startswith(f"FF_SQLITE_PATH (--sqlite-path) is {folder / 'ro' / 'ff.db'}, but "
                           f"this user cannot create files in {folder / 'ro'}")
    assert line.endswith("give it write permission or set FF_SQLITE_PATH / --sqlite-path to "
                         "another file in another folder")


# -- unknown and misspelt FF_* names --------------------------------------------------------

def test_an_unknown_set_name(tmp_path):
    assert refusal(tmp_path, "--set", "FF_NOPE=1") == (
        "unknown setting FF_NOPE (--set); remove it, or load the plugin that reads it "
        "(--plugin-path / FF_PLUGIN_PATH); 'flowfabric serve --help' lists every setting")


def test_a_misspelt_environment_variable(tmp_path):
    assert refusal(tmp_path, env={"FF_SQLITE_PAHT": "x.db"}) == (
        "unknown setting FF_SQLITE_PAHT (environment); did you mean FF_SQLITE_PATH? "
        "'flowfabric serve --help' lists every setting")
    assert not (tmp_path / "flowfabric.db").exists()


def test_test_suite_variables_are_ignored(tmp_path):
    """FF_TEST_* passes the name check: the refusal is about the next problem."""
    line = refusal(tmp_path, env={"FF_TEST_ANYTHING": "1", "FF_FLOW_PARTITIONS": "0"})
    assert line.startswith("invalid value for FF_FLOW_PARTITIONS")


def test_every_backends_settings_are_known_whatever_the_backend(tmp_path):
    env = {"FF_VALKEY_URL": "redis://h", "FF_POSTGRES_POOL_SIZE": "3", "FF_TLS": "false",
           "FF_POSTGRES_CONNECT_TIMEOUT_MS": "500", "FF_SQLITE_PATH": str(tmp_path)}
    assert refusal(tmp_path, env=env).startswith("FF_SQLITE_PATH (--sqlite-path) names a folder")


def test_a_plugin_on_the_plugin_path_declares_its_settings(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ff_knobs.py").write_text(KNOB_PLUGIN)
    without = refusal(tmp_path, "--set", "FF_KNOB_LEVEL=4")
    assert without.startswith("unknown setting FF_KNOB_LEVEL (--set)")
    with_it = refusal(tmp_path, "--set", "FF_KNOB_LEVEL=4", "--plugin-path", str(plugins),
                      "--sqlite-path", str(tmp_path))
    assert with_it.startswith("FF_SQLITE_PATH (--sqlite-path) names a folder")


# -- other settings -------------------------------------------------------------------------

def test_postgres_connect_timeout_out_of_range(tmp_path):
    env = {"FF_POSTGRES_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
           "FF_POSTGRES_CONNECT_TIMEOUT_MS": "10"}
    assert refusal(tmp_path, "--backend", "postgres", env=env) == (
        "invalid value for FF_POSTGRES_CONNECT_TIMEOUT_MS: must be a whole number of "
        "milliseconds from 50 to 60000, got '10'")


def test_an_error_inside_the_nursery_is_one_line(tmp_path):
    """The port check fails inside the supervisor's nursery, in an exception group."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refusal(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert line.startswith(f"cannot listen on 127.0.0.1:{port}: the address is already in use")
    assert "FF_LISTEN_ADDR / --listen" in line


def test_an_unknown_backend_with_broken_plugins_is_one_error_line(tmp_path):
    broken = Path(__file__).parents[1] / "fixtures" / "broken_plugins"
    proc = cli(tmp_path, *EPHEMERAL, "--backend", "nope", "--plugin-path", str(broken))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("flowfabric: error:")]
    assert len(errors) == 1, proc.stderr
    assert "unknown backend 'nope'" in errors[0] and "plugin 'ff_broken_import'" in errors[0]
    others = [ln for ln in proc.stderr.splitlines() if ln not in errors]
    assert all(" WARNING " in ln for ln in others), proc.stderr  # the startup log's warnings


# -- what --help and `plugins` show --------------------------------------------------------

def test_help_lists_backends_and_plugin_settings_from_the_plugin_path(tmp_path):
    (tmp_path / "ff_knobs.py").write_text(KNOB_PLUGIN)
    for args in (("serve", "--help", "--plugin-path", str(tmp_path)),
                 ("--help",)):
        env = {"FF_PLUGIN_PATH": str(tmp_path)} if args == ("--help",) else {}
        proc = cli(tmp_path, *args, env=env)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert "Backends found: memory, postgres, sqlite, valkey" in proc.stdout
        assert "  ff_knobs (no backend):\n    FF_KNOB_LEVEL" in proc.stdout
        assert "(default: 3)" in proc.stdout
        assert "    FF_POSTGRES_CONNECT_TIMEOUT_MS" in proc.stdout
    assert "--sqlite-path VALUE" in cli(tmp_path, "serve", "--help").stdout


def test_plugins_says_when_a_plugin_registers_no_backend(tmp_path):
    (tmp_path / "ff_knobs.py").write_text(KNOB_PLUGIN)
    proc = cli(tmp_path, "plugins", "--plugin-path", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("ff_knobs "))
    assert line.endswith("backends: -  [ok: registers no backend]")
