"""FF_* settings: defaults, validation naming the variable, the auth guard, overrides."""

import pytest

from appliance.config import SETTINGS, load_config
from appliance.core.clock import FakeClock
from appliance.core.errors import StartupError
from appliance.core.partitions import PartitionConfig


def test_defaults():
    cfg = load_config({})
    assert (cfg.listen_host, cfg.listen_port, cfg.listen) == ("127.0.0.1", 9090,
                                                              "127.0.0.1:9090")
    assert cfg.backend == "sqlite"
    assert cfg.partitions == PartitionConfig(256, 32, 32)
    assert (cfg.api_token, cfg.insecure, cfg.cors_origins) == (None, False, ())
    assert (cfg.default_lease_ttl_ms, cfg.max_claim_wait_ms, cfg.retention_ms) == (
        30_000, 30_000, 86_400_000)
    assert (cfg.shutdown_grace_s, cfg.log_level) == (15.0, "info")
    assert cfg.scanner_intervals_s == {"lease_expiry": 1.5, "delayed_promoter": 0.75,
                                       "attempt_timeout": 2, "execution_deadline": 5,
                                       "retention_trimmer": 60, "dependency_reconciler": 15,
                                       "flow_cancel_reconciler": 15,
                                       "grant_expiry": 1, "budget_reset": 15,
                                       "quota_reconciler": 30,
                                           "suspension_timeout": 2,
                                           "pending_waitpoint_expiry": 5}


def test_every_setting_with_a_default_loads():
    cfg = load_config({s.env: s.default for s in SETTINGS if s.default is not None})
    assert cfg.listen == "127.0.0.1:9090"


def test_non_ff_variables_are_ignored():
    cfg = load_config({"PATH": "/bin", "LISTEN_ADDR": "nonsense"})
    assert cfg.listen == "127.0.0.1:9090"
    assert "PATH" not in cfg.options


@pytest.mark.parametrize("name, value", [
    ("FF_FLOW_PARTITIONS", "0"),
    ("FF_FLOW_PARTITIONS", "65536"),
    ("FF_FLOW_PARTITIONS", "many"),
    ("FF_BUDGET_PARTITIONS", "-1"),
    ("FF_QUOTA_PARTITIONS", ""),
    ("FF_LISTEN_ADDR", "nonsense"),
    ("FF_LISTEN_ADDR", "127.0.0.1:99999"),
    ("FF_LISTEN_ADDR", "127.0.0.1:http"),
    ("FF_LISTEN_ADDR", ":9090"),
    ("FF_LISTEN_ADDR", "bad host!:80"),
    ("FF_LOG_LEVEL", "loud"),
    ("FF_CORS_ORIGINS", ""),
    ("FF_CORS_ORIGINS", " , "),
    ("FF_CORS_ORIGINS", "https://a.example,https://b .example"),
    ("FF_INSECURE", "maybe"),
    ("FF_BACKEND", ""),
    ("FF_DEFAULT_LEASE_TTL_MS", "0"),
    ("FF_MAX_CLAIM_WAIT_MS", "300001"),
    ("FF_LEASE_EXPIRY_INTERVAL_MS", "1.5"),
    ("FF_TERMINAL_RETENTION_MS", "0"),
    ("FF_SHUTDOWN_GRACE_MS", "-5"),
])
def test_bad_value_is_a_startup_error_naming_the_variable(name, value):
    with pytest.raises(StartupError) as err:
        load_config({name: value})
    assert name in str(err.value)


@pytest.mark.parametrize("addr", ["bad host!:80", "not a-host:80", "x-!:80", "a..b:80"])
def test_malformed_hostname_is_refused_even_with_a_token(addr):
    with pytest.raises(StartupError, match="FF_LISTEN_ADDR"):
        load_config({"FF_LISTEN_ADDR": addr, "FF_API_TOKEN": "t"})


def test_bad_value_message_quotes_what_was_given():
    with pytest.raises(StartupError, match="'loud'"):
        load_config({"FF_LOG_LEVEL": "loud"})


@pytest.mark.parametrize("addr", ["0.0.0.0:9090", "10.1.2.3:80", "[::]:9090", "example.com:80"])
def test_non_loopback_without_token_is_refused(addr):
    with pytest.raises(StartupError) as err:
        load_config({"FF_LISTEN_ADDR": addr})
    assert "FF_API_TOKEN" in str(err.value)
    assert "--insecure" in str(err.value)


@pytest.mark.parametrize("extra", [{"FF_INSECURE": "true"}, {"FF_INSECURE": "1"},
                                   {"FF_API_TOKEN": "s3cret"}])
def test_non_loopback_with_token_or_insecure_is_allowed(extra):
    cfg = load_config({"FF_LISTEN_ADDR": "0.0.0.0:9090", **extra})
    assert cfg.listen == "0.0.0.0:9090"


@pytest.mark.parametrize("addr, host", [("localhost:1", "localhost"), ("[::1]:1", "::1"),
                                        ("127.0.0.1:0", "127.0.0.1")])
def test_loopback_hosts_need_no_token(addr, host):
    assert load_config({"FF_LISTEN_ADDR": addr}).listen_host == host


def test_ipv6_listen_is_bracketed():
    assert load_config({"FF_LISTEN_ADDR": "[::1]:8080"}).listen == "[::1]:8080"


def test_empty_token_counts_as_unset():
    assert load_config({"FF_API_TOKEN": ""}).api_token is None
    with pytest.raises(StartupError):
        load_config({"FF_API_TOKEN": "", "FF_LISTEN_ADDR": "0.0.0.0:1"})


def test_overrides_beat_env():
    cfg = load_config({"FF_LISTEN_ADDR": "127.0.0.1:1", "FF_LOG_LEVEL": "debug"},
                      {"FF_LISTEN_ADDR": "127.0.0.1:2", "FF_LOG_LEVEL": None})
    assert (cfg.listen_port, cfg.log_level) == (2, "debug")


def test_insecure_override_allows_public_listen():
    cfg = load_config({"FF_LISTEN_ADDR": "0.0.0.0:1"}, {"FF_INSECURE": "true"})
    assert cfg.insecure


def test_cors_origins_are_split_and_trimmed():
    cfg = load_config({"FF_CORS_ORIGINS": " https://a.example , https://b.example,"})
    assert cfg.cors_origins == ("https://a.example", "https://b.example")


def test_backend_name_is_normalised():
    assert load_config({"FF_BACKEND": " SQLite "}).backend == "sqlite"


def test_values_are_case_and_space_tolerant():
    cfg = load_config({"FF_LOG_LEVEL": " WARNING ", "FF_FLOW_PARTITIONS": " 4 "})
    assert (cfg.log_level, cfg.partitions.flow) == ("warning", 4)


def test_zero_interval_disables_a_scanner():
    cfg = load_config({"FF_LEASE_EXPIRY_INTERVAL_MS": "0", "FF_RETENTION_TRIMMER_INTERVAL_S": "0"})
    assert cfg.scanner_intervals_s["lease_expiry"] == 0
    assert cfg.scanner_intervals_s["retention_trimmer"] == 0


def test_plugin_options_are_passed_through():
    cfg = load_config({"FF_MYSTORE_URL": "env", "FF_EMPTY": ""}, {"FF_MYSTORE_POOL": "4"})
    assert (cfg.option("FF_MYSTORE_URL"), cfg.option("FF_MYSTORE_POOL")) == ("env", "4")
    assert cfg.option("FF_EMPTY") is None
    assert cfg.option("FF_MISSING") is None


def test_clock_is_injectable():
    clock = FakeClock(5)
    assert load_config({}, clock=clock).clock is clock
