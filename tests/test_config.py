"""Settings: a bad value stops start-up with an error naming its key (STYLE §8).

Each case imports `ocppgw.settings` in a fresh interpreter with one bad variable, as a real
start-up would.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from ocppgw import config
from ocppgw.config import Config


@pytest.fixture(autouse=True)
def _keys_of_this_file_stay_here():
    """The keys these tests read (T_A, ...) are not settings: keep them out of config.KEYS, which
    test_compose.py compares with the README whatever order the files run in."""
    before = list(config.KEYS)
    yield
    config.KEYS[:] = before


REPO = Path(__file__).resolve().parents[1]
# the variables a start-up may read, cleared so the machine's environment cannot leak in
SCRUB = ("DJANGO_", "OCPPGW_", "DATABASE_URL", "REDIS_URL", "MQTT_URL", "DEBUG")


def import_settings(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    return subprocess.run(
        [sys.executable, "-c", "import ocppgw.settings"],
        cwd=REPO,
        env={**clean, "DEBUG": "true", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_good_environment_imports():
    result = import_settings({"OCPPGW_RATE_PER_S": "2.5", "OCPPGW_LOG_ENABLED": "false"})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("DEBUG", "maybe", "expected true or false"),  # never silently False
        ("DEBUG", "1", "expected true or false"),
        ("OCPPGW_LOG_ENABLED", "yes", "expected true or false"),
        ("DJANGO_BEHIND_TLS_PROXY", "on", "expected true or false"),
        ("OCPPGW_PORT", "abc", "expected int"),
        ("OCPPGW_PORT", "70000", "outside 1..65535"),
        ("OCPPGW_PORT", "0", "outside"),
        ("OCPPGW_MAX_FRAME_BYTES", "1.5", "expected int"),
        ("OCPPGW_MAX_FRAME_BYTES", "100", "outside"),
        ("OCPPGW_CALL_TIMEOUT_S", "soon", "expected float"),
        ("OCPPGW_CALL_TIMEOUT_S", "-1", "outside"),
        ("OCPPGW_RATE_PER_S", "fast", "expected float"),
        ("OCPPGW_MQTT_QOS", "3", "outside 0..2"),
        ("OCPPGW_AUTH", "ldap", "expected one of"),
        ("OCPPGW_VALIDATION", "strict", "expected one of"),
        ("OCPPGW_VALIDATION_FAILURE", "warn", "expected one of"),
        ("OCPPGW_UNKNOWN_ACTIONS", "drop", "expected one of"),
        ("OCPPGW_DEFAULT_SUBPROTOCOL", "ocpp1.5", "expected one of"),
        ("OCPPGW_TOPIC_PRESET", "emqx4", "expected one of"),
        ("OCPPGW_MQTT_PROTOCOL", "3", "expected one of"),
        ("OCPPGW_LOG_LEVEL", "debug", "expected one of"),
        ("OCPPGW_SUBPROTOCOLS", "ocpp1.6,ocpp1.5", "unknown ocpp1.5"),
        ("OCPPGW_TRUSTED_PROXIES", "10.0.0.1,proxy.local", "not an IP address"),
        ("MQTT_URL", "http://broker:1883", "expected mqtt|mqtts://"),
        ("MQTT_URL", "mqtt://broker:port", "bad port"),
        ("MQTT_URL", "mqtt://", "expected mqtt|mqtts://"),
        ("DATABASE_URL", "nosuchdb://x/y", "database URL"),
        ("OCPPGW_UPSTREAM_TOPIC", "ocpp/${station}/${action}", "unknown placeholder"),
        ("OCPPGW_REPLY_TOPIC", "ocpp/+/${cid}", "wildcards"),
        ("OCPPGW_ERROR_TOPIC", "ocpp/#", "wildcards"),
        ("OCPPGW_NOTICE_TOPIC", "ocpp/$cid", "lone '$'"),
        ("OCPPGW_PRESENCE_TOPIC", "ocpp/${nope}", "unknown placeholder"),
        ("OCPPGW_DOWNSTREAM_TOPIC", "ocpp/cs/#", "must contain ${cid}"),
        ("OCPPGW_DOWNSTREAM_TOPIC", "ocpp/cs/${cid}/${action}", "only ${cid}"),
        ("OCPPGW_SHARE_GROUP", "gw/one", "one topic level"),
        ("OCPPGW_SHARE_GROUP", "", "one topic level"),
        ("OCPPGW_SUBPROTOCOL_ALIASES", "ocpp1.6j", "expected alias=one of"),
        ("OCPPGW_SUBPROTOCOL_ALIASES", "ocpp1.6j=ocpp1.5", "expected alias=one of"),
    ],
)
def test_bad_value_stops_start_up_naming_the_key(key, value, why):
    result = import_settings({key: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{key}: " in result.stderr
    assert why in result.stderr


def test_secret_key_is_required_without_debug():
    result = import_settings({"DEBUG": "false"})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY: required when DEBUG is false" in result.stderr


def test_secret_key_from_a_docker_secret_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a-long-random-value-from-a-file\n")
    ok = import_settings({"DEBUG": "false", "DJANGO_SECRET_KEY_FILE": str(secret)})
    assert ok.returncode == 0, ok.stderr
    missing = import_settings({"DJANGO_SECRET_KEY_FILE": str(tmp_path / "absent")})
    assert missing.returncode != 0
    assert "DJANGO_SECRET_KEY_FILE: cannot read" in missing.stderr


def test_every_bad_key_is_named_at_once():
    result = import_settings({"OCPPGW_PORT": "x", "OCPPGW_AUTH": "y", "OCPPGW_LOG_ENABLED": "z"})
    assert result.returncode != 0
    for key in ("OCPPGW_PORT", "OCPPGW_AUTH", "OCPPGW_LOG_ENABLED"):
        assert f"{key}: " in result.stderr


# --- the reader itself, in process ----------------------------------------------------------------
@pytest.fixture
def env(monkeypatch):
    def set_(**values):
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    return set_


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("TRUE", True), (" False ", False), ("", True)],
)
def test_bool_accepts_only_true_and_false(env, value, expected):
    env(T_FLAG=value)
    cfg = Config()
    assert cfg.bool("T_FLAG", True) is expected
    cfg.finish()


def test_unset_values_take_their_defaults(monkeypatch):
    for key in ("T_INT", "T_LIST", "T_CHOICE", "T_URL"):
        monkeypatch.delenv(key, raising=False)
    cfg = Config()
    assert cfg.int("T_INT", 7, min_value=1) == 7
    assert cfg.list("T_LIST", ["a"]) == ["a"]
    assert cfg.choice("T_CHOICE", "x", ["x", "y"]) == "x"
    assert cfg.url("T_URL", "mqtt://h:1883", ["mqtt"]) == "mqtt://h:1883"
    cfg.finish()


def test_list_strips_items_and_drops_empty_ones(env):
    env(T_LIST=" ocpp1.6 , ,ocpp2.1,")
    cfg = Config()
    assert cfg.list("T_LIST", [], allowed=["ocpp1.6", "ocpp2.1"]) == ["ocpp1.6", "ocpp2.1"]
    cfg.finish()


def test_finish_raises_one_error_listing_every_key(env):
    env(T_A="x", T_B="maybe")
    cfg = Config()
    cfg.int("T_A", 1)
    cfg.bool("T_B", False)
    with pytest.raises(ImproperlyConfigured) as caught:
        cfg.finish()
    assert "T_A: expected int" in str(caught.value)
    assert "T_B: expected true or false" in str(caught.value)


_LISTEN = (
    "import django; django.setup();"
    "from stations.management.commands.rungateway import Command;"
    "print(Command().create_parser('manage.py', 'rungateway').get_default('host'))"
)


@pytest.mark.parametrize(
    ("env", "host"),
    [
        ({"DEBUG": "true"}, "127.0.0.1"),  # a laptop's debug portal and admin stay off the LAN
        ({"DEBUG": "false", "DJANGO_SECRET_KEY": "k" * 50}, "0.0.0.0"),
        ({"DEBUG": "true", "OCPPGW_HOST": "0.0.0.0"}, "0.0.0.0"),  # asked for
    ],
)
def test_rungateway_listens_on_loopback_under_debug_unless_asked(env, host):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    result = subprocess.run(
        [sys.executable, "-c", _LISTEN],
        cwd=REPO,
        env={**clean, "DJANGO_SETTINGS_MODULE": "ocppgw.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == host
