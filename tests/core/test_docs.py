"""The README documents every setting the appliance reads, with its default."""

from pathlib import Path

import pytest

from appliance.config import SETTINGS

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_readme_configuration_table_lists_the_setting(setting):
    row = next((line for line in README.splitlines() if line.startswith(f"| `{setting.env}`")),
               None)
    assert row is not None, f"README's configuration table has no row for {setting.env}"
    if setting.default is not None:
        assert f"`{setting.default}`" in row, f"README shows another default for {setting.env}"
    if setting.flag is not None:
        assert f"`{setting.flag}`" in row
