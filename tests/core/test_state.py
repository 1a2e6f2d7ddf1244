"""The derived public state and the claimability rule."""

import pytest

from appliance.core.state import (
    Eligibility,
    Ownership,
    Phase,
    PublicState,
    TerminalOutcome,
    derive_public_state,
    is_claimable,
)


@pytest.mark.parametrize("phase, eligibility, outcome, expected", [
    (Phase.TERMINAL, Eligibility.NOT_APPLICABLE, TerminalOutcome.SUCCESS, PublicState.COMPLETED),
    (Phase.TERMINAL, Eligibility.NOT_APPLICABLE, TerminalOutcome.FAILED, PublicState.FAILED),
    (Phase.TERMINAL, Eligibility.NOT_APPLICABLE, TerminalOutcome.CANCELLED, PublicState.CANCELLED),
    (Phase.TERMINAL, Eligibility.NOT_APPLICABLE, TerminalOutcome.EXPIRED, PublicState.EXPIRED),
    (Phase.TERMINAL, Eligibility.NOT_APPLICABLE, TerminalOutcome.SKIPPED, PublicState.SKIPPED),
    (Phase.TERMINAL, Eligibility.NOT_APPLICABLE, TerminalOutcome.NONE, PublicState.FAILED),
    (Phase.ACTIVE, Eligibility.NOT_APPLICABLE, TerminalOutcome.NONE, PublicState.ACTIVE),
    (Phase.RUNNABLE, Eligibility.ELIGIBLE_NOW, TerminalOutcome.NONE, PublicState.WAITING),
    (Phase.RUNNABLE, Eligibility.NOT_ELIGIBLE_UNTIL_TIME, TerminalOutcome.NONE, PublicState.DELAYED),
    (Phase.RUNNABLE, Eligibility.BLOCKED_BY_DEPENDENCIES, TerminalOutcome.NONE,
     PublicState.WAITING_CHILDREN),
    (Phase.RUNNABLE, Eligibility.BLOCKED_BY_BUDGET, TerminalOutcome.NONE, PublicState.RATE_LIMITED),
    (Phase.RUNNABLE, Eligibility.BLOCKED_BY_QUOTA, TerminalOutcome.NONE, PublicState.RATE_LIMITED),
    (Phase.RUNNABLE, Eligibility.BLOCKED_BY_ROUTE, TerminalOutcome.NONE, PublicState.WAITING),
    (Phase.RUNNABLE, Eligibility.BLOCKED_BY_OPERATOR, TerminalOutcome.NONE, PublicState.WAITING),
    (Phase.RUNNABLE, Eligibility.NOT_APPLICABLE, TerminalOutcome.NONE, PublicState.WAITING),
    (Phase.SUSPENDED, Eligibility.NOT_APPLICABLE, TerminalOutcome.NONE, PublicState.SUSPENDED),
    (Phase.SUBMITTED, Eligibility.NOT_APPLICABLE, TerminalOutcome.NONE, PublicState.WAITING),
])
def test_derive_public_state(phase, eligibility, outcome, expected):
    assert derive_public_state(phase, eligibility, outcome) == expected


def test_derive_accepts_plain_strings_and_returns_a_string_value():
    assert derive_public_state("terminal", "not_applicable", "success") == "completed"


def test_derive_never_fails_on_unknown_values():
    assert derive_public_state("bogus", "bogus", "bogus") == PublicState.WAITING
    assert derive_public_state("terminal", "x", "bogus") == PublicState.FAILED


@pytest.mark.parametrize("phase, ownership, eligibility, expected", [
    (Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.ELIGIBLE_NOW, True),
    (Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.NOT_ELIGIBLE_UNTIL_TIME, False),
    (Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.BLOCKED_BY_DEPENDENCIES, False),
    (Phase.ACTIVE, Ownership.LEASED, Eligibility.NOT_APPLICABLE, False),
    (Phase.ACTIVE, Ownership.LEASE_EXPIRED_RECLAIMABLE, Eligibility.NOT_APPLICABLE, True),
    (Phase.ACTIVE, Ownership.LEASE_REVOKED, Eligibility.NOT_APPLICABLE, True),
    (Phase.TERMINAL, Ownership.UNOWNED, Eligibility.NOT_APPLICABLE, False),
    (Phase.SUSPENDED, Ownership.UNOWNED, Eligibility.NOT_APPLICABLE, False),
    (Phase.SUBMITTED, Ownership.UNOWNED, Eligibility.ELIGIBLE_NOW, False),
])
def test_is_claimable(phase, ownership, eligibility, expected):
    assert is_claimable(phase, ownership, eligibility) is expected
