"""The README documents every setting the appliance and the in-tree backends read, with its
default."""

from collections import Counter
from pathlib import Path

import flowfabric_postgres
import flowfabric_sqlite
import flowfabric_valkey
import pytest

from appliance.config import SETTINGS
from appliance.core.errors import KINDS

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
IN_TREE = (flowfabric_sqlite, flowfabric_valkey, flowfabric_postgres)
EVERY_SETTING = (*SETTINGS, *(s for plugin in IN_TREE for s in plugin.flowfabric_settings()))


@pytest.mark.parametrize("setting", EVERY_SETTING, ids=lambda s: s.env)
def test_readme_configuration_table_lists_the_setting(setting):
    row = next((line for line in README.splitlines() if line.startswith(f"| `{setting.env}`")),
               None)
    assert row is not None, f"README's configuration table has no row for {setting.env}"
    if setting.default is not None:
        assert f"`{setting.default}`" in row, f"README shows another default for {setting.env}"
    if setting.flag is not None:
        assert f"`{setting.flag}`" in row


def test_every_setting_is_declared_once():
    twice = [name for name, n in Counter(s.env for s in EVERY_SETTING).items() if n > 1]
    assert twice == []


def test_the_sqlite_plugin_owns_its_path_and_flag():
    assert "FF_SQLITE_PATH" not in {s.env for s in SETTINGS}
    (path,) = flowfabric_sqlite.flowfabric_settings()
    assert (path.env, path.default, path.flag) == ("FF_SQLITE_PATH", "flowfabric.db",
                                                    "--sqlite-path")


HTTP_API = (Path(__file__).parents[2] / "spec" / "http-api.md").read_text(encoding="utf-8")
#: Kinds only the HTTP layer answers (werkzeug's errors and the listener's own answers).
HTTP_KINDS = ("route_not_found", "method_not_allowed", "body_timeout", "malformed_request",
              "overloaded")
#: Base classes: their subclasses' kinds are the ones answered.
ABSTRACT = {"not_found", "conflict"}


@pytest.mark.parametrize("kind", sorted((set(KINDS) - ABSTRACT) | set(HTTP_KINDS)))
def test_the_http_reference_lists_every_error_kind(kind):
    assert f"`{kind}`" in HTTP_API, f"spec/http-api.md does not list the error kind {kind!r}"
