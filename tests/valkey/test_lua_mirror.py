"""The Lua library against the Python definitions: its data is generated (nothing of it
is written out in lua/), every in-tree operation has its rule, every refusal is a kind
core knows and carries what core needs to word it."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from flowfabric_lua import library_files
from flowfabric_valkey import generated

from appliance.core.errors import KINDS
from appliance.core.operations import OPERATIONS

LUA = {name: text for name, text in library_files()}
SOURCE = "\n".join(LUA.values())
GENERATED = ("INT_FIELDS", "TERMINAL_PUBLIC", "RUNNABLE_PUBLIC", "RECLAIMABLE", "ERROR_KINDS",
             "DEFAULTS", "LIMITS", "SCANNERS", "OPERATIONS", "FLOW_INT_FIELDS", "FLOWS")


@pytest.mark.parametrize("name", GENERATED)
def test_generated_data_is_not_written_out_in_the_lua_files(name):
    assert f"local {name} =" not in SOURCE
    assert f"local {name} =" in generated.prelude()


def test_every_in_tree_operation_has_its_lua_rule():
    in_tree = {name for name, op in OPERATIONS.items() if op.lua_source is None}
    rules = set(re.findall(r"^RULES\.(\w+) = ", SOURCE, re.M))
    assert rules == in_tree, f"missing: {in_tree - rules}, unknown: {rules - in_tree}"


def _refusals() -> list[tuple[str, str]]:
    """(kind, details table text) of every fail_with call in the library."""
    found = []
    for match in re.finditer(r"fail_with\('(\w+)'(?:,\s*\{)?", SOURCE):
        depth, i, start = 1, match.end(), match.end()
        if not match.group(0).endswith("{"):
            found.append((match.group(1), ""))
            continue
        while depth:
            depth += {"{": 1, "}": -1}.get(SOURCE[i], 0)
            i += 1
        found.append((match.group(1), SOURCE[start:i - 1]))
    return found


@pytest.mark.parametrize("kind, details", _refusals())
def test_every_lua_refusal_is_a_kind_core_words_from_its_details(kind, details):
    assert kind in KINDS and KINDS[kind].template, f"{kind!r} has no template in core.errors"
    needed = {f for _, f, _, _ in string.Formatter().parse(KINDS[kind].template) if f}
    given = set(re.findall(r"(\w+)\s*=", details))
    assert needed <= given, f"{kind}: the Lua details lack {needed - given}"


def test_generated_tables_hold_what_python_holds():
    prelude = generated.prelude()
    for field in generated.int_fields():
        assert f'["{field}"] = true' in prelude
    for name, op in OPERATIONS.items():
        assert f'{{"{name}", "{op.lua}"}}' in prelude


def test_the_lua_files_exist_where_the_loader_looks():
    assert set(LUA) >= {"00_library.lua", "10_rules.lua", "20_functions.lua", "90_register.lua"}
    assert all(Path(__file__).parents[2].joinpath("lua", name).is_file() for name in LUA)
