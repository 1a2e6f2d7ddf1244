"""A raw-socket fuzzer against a real appliance on each backend: framing, headers,
chunking, methods, paths and bodies. The process stays up, /healthz stays 200, and no
answer is a 5xx other than 503."""

from __future__ import annotations

import pytest
from support.http_fuzz import run_fuzz

pytestmark = pytest.mark.e2e


def test_fuzzed_requests_never_take_the_appliance_down_or_answer_5xx(live):
    report = run_fuzz(live.port, cases=2400, threads=16, seed=7)
    assert live.app.proc.poll() is None, f"the appliance exited:\n{live.app.log[-3000:]}"
    assert live.healthy()
    assert report.cases > 1500
    errors = report.server_errors()
    assert not errors, "\n\n".join(f"{s}: sent {sent!r}\n got {got!r}" for s, sent, got in
                                   errors[:5])
    assert "Traceback" not in live.app.log or "failed and was closed" in live.app.log
    print(f"{live.backend}: {report.cases} cases, statuses {dict(report.statuses)}")
