"""ocppgw settings: every value comes from the environment (a `.env` file is read if present;
real variables win). Each read goes through `ocppgw.config`, so a bad value stops start-up with
an error naming its key."""

from pathlib import Path

from ocppgw import logs
from ocppgw.config import Config
from stations import topics
from stations.subprotocols import parse_aliases

BASE_DIR = Path(__file__).resolve().parent.parent
cfg = Config(BASE_DIR / ".env")

# --- Django core -------------------------------------------------------------------------------
# development conveniences and tracebacks; never on in production
DEBUG = cfg.bool("DEBUG", False)
# required with DEBUG off: a fallback key would sign sessions with a public value
SECRET_KEY = cfg.secret(
    "DJANGO_SECRET_KEY", required=not DEBUG, dev_default="dev-only-insecure-key"
)
# hosts the portal/API answer to; stations connect by IP often, so "*" is the laptop default
ALLOWED_HOSTS = cfg.list("DJANGO_ALLOWED_HOSTS", ["*"])
# origins allowed to POST to the portal over HTTPS behind a proxy (scheme://host)
CSRF_TRUSTED_ORIGINS = cfg.list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# trust X-Forwarded-Proto from the TLS proxy, so secure cookies and redirects work
_forwarded_proto = cfg.bool("DJANGO_BEHIND_TLS_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _forwarded_proto else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _forwarded_proto
# redirect plain-HTTP portal requests to HTTPS (health and metrics stay reachable over HTTP)
SECURE_SSL_REDIRECT = cfg.bool("DJANGO_SECURE_SSL_REDIRECT", _forwarded_proto)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# HSTS seconds for the portal's host; 0 = off (it commits browsers to HTTPS for that long)
SECURE_HSTS_SECONDS = cfg.int("DJANGO_SECURE_HSTS_SECONDS", 0, min_value=0)
# extend HSTS to subdomains and ask for preloading: both commit the whole domain, off by default
SECURE_HSTS_INCLUDE_SUBDOMAINS = cfg.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = cfg.bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# log level of the gateway's own loggers
LOG_LEVEL = cfg.choice("OCPPGW_LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR"])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "stations",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ocppgw.urls"
ASGI_APPLICATION = "ocppgw.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# SQLite by default so a laptop needs nothing but Python; PostgreSQL in production
DATABASES = {"default": cfg.db("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# under ASGI each request may run on another thread: persistent connections leak, keep 0
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # the log writer and the portal write concurrently: wait instead of "database is locked";
    # WAL lets readers run beside the writer, and synchronous=NORMAL skips an fsync per batch
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20,
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis coordinates gateway processes (duplicate cid, kicks); unset = one process, in memory
REDIS_URL = cfg.str("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8: without socket_timeout None idle receivers die every ~5 s (docs/performance.md)
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": None, "max_connections": 1000}]
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# station passwords are 16-40 random characters (OCPP BasicAuthPassword), so a cheap salted
# hash is as strong as PBKDF2 for them; humans keep PBKDF2 (first entry = default for new users)
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "stations.hashers.StationPasswordHasher",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# ISO dates and times in admin and forms (ocppgw/formats/en/formats.py)
FORMAT_MODULE_PATH = "ocppgw.formats"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "portal:stations"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "portal.api_auth.TlsBasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "EXCEPTION_HANDLER": "portal.api_auth.explain_401",
}

# log lines as plain text or one JSON object per line (log shippers); both carry cid and UniqueId
LOG_FORMAT = cfg.choice("OCPPGW_LOG_FORMAT", "plain", ["plain", "json"])
LOGGING = logs.config(LOG_FORMAT, LOG_LEVEL)

# --- Gateway: charge point side -----------------------------------------------------------------
# TCP port stations connect to (the EMQX gateway's default, so station configs carry over)
OCPPGW_PORT = cfg.int("OCPPGW_PORT", 33033, min_value=1, max_value=65535)
# interface rungateway listens on: loopback under DEBUG, so a laptop's debug portal and admin
# stay off the LAN; every interface otherwise (containers, hosts behind a balancer)
OCPPGW_HOST = cfg.str("OCPPGW_HOST", "127.0.0.1" if DEBUG else "0.0.0.0")
# OCPP versions offered, in the gateway's order of preference
OCPPGW_SUBPROTOCOLS = cfg.list(
    "OCPPGW_SUBPROTOCOLS",
    ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"],
    allowed=["ocpp1.6", "ocpp2.0.1", "ocpp2.1"],
)
# version for a station that offers no subprotocol at all; empty = refuse it (close 1002)
OCPPGW_DEFAULT_SUBPROTOCOL = cfg.choice(
    "OCPPGW_DEFAULT_SUBPROTOCOL", "", ["", "ocpp1.6", "ocpp2.0.1", "ocpp2.1"]
)
# other spellings of a subprotocol, `ocpp1.6j=ocpp1.6,OCPP1.6=ocpp1.6`; empty = exact names only
OCPPGW_SUBPROTOCOL_ALIASES = cfg.parsed("OCPPGW_SUBPROTOCOL_ALIASES", {}, parse_aliases)
# "basic" = HTTP Basic against Django users; "none" only on closed networks
OCPPGW_AUTH = cfg.choice("OCPPGW_AUTH", "basic", ["basic", "none"])
# seconds a verified station password stays remembered in memory
OCPPGW_AUTH_CACHE_TTL_S = cfg.int("OCPPGW_AUTH_CACHE_TTL_S", 3600, min_value=0)
# remember verified passwords in Redis for every process too (REDIS_URL set; keyed by an HMAC)
OCPPGW_AUTH_SHARED_CACHE = cfg.bool("OCPPGW_AUTH_SHARED_CACHE", True)
# uncached password checks running at once (each one is a CPU-bound hash)
OCPPGW_AUTH_CONCURRENCY = cfg.int("OCPPGW_AUTH_CONCURRENCY", 4, min_value=1)
# handshakes per process under way or waiting for a password check; past it, one whose password
# is not known verified gets HTTP 503 (0 = no bound). T9: 1000 -> 4000 took a cold storm of
# 50,000 on 3 processes from 134 to 77 s (refusals 106k -> 41k, none waited past 20 s)
OCPPGW_MAX_PENDING_HANDSHAKES = cfg.int("OCPPGW_MAX_PENDING_HANDSHAKES", 4000, min_value=0)
# station sockets open per process, handshakes too; past it: HTTP 503 (0 = by the fd limit)
OCPPGW_MAX_STATIONS = cfg.int("OCPPGW_MAX_STATIONS", 0, min_value=0)
# Retry-After of a capacity refusal, seconds; each refusal says 1-2x this (retries spread)
OCPPGW_RETRY_AFTER_S = cfg.int("OCPPGW_RETRY_AFTER_S", 10, min_value=1)
# failed attempts per (cid, address) per minute before further attempts are refused unchecked
OCPPGW_AUTH_FAILURES_PER_MIN = cfg.int("OCPPGW_AUTH_FAILURES_PER_MIN", 10, min_value=1)
# largest inbound frame, bytes; real NotifyReport/certificate frames reach hundreds of KiB
OCPPGW_MAX_FRAME_BYTES = cfg.int("OCPPGW_MAX_FRAME_BYTES", 1048576, min_value=1024)
# sustained CALLs per second per station (0 = off) and the burst allowed above it
OCPPGW_RATE_PER_S = cfg.float("OCPPGW_RATE_PER_S", 20.0, min_value=0)
OCPPGW_RATE_BURST = cfg.int("OCPPGW_RATE_BURST", 100, min_value=1)
# server WebSocket ping interval and the time a pong may take, seconds (half-open sockets)
OCPPGW_PING_INTERVAL_S = cfg.int("OCPPGW_PING_INTERVAL_S", 30, min_value=1)
OCPPGW_PING_TIMEOUT_S = cfg.int("OCPPGW_PING_TIMEOUT_S", 30, min_value=1)
# close a station silent for this long, seconds (0 = never)
OCPPGW_IDLE_TIMEOUT_S = cfg.int("OCPPGW_IDLE_TIMEOUT_S", 0, min_value=0)
# vendor actions without a schema: forward unvalidated, or answer NotImplemented
OCPPGW_UNKNOWN_ACTIONS = cfg.choice("OCPPGW_UNKNOWN_ACTIONS", "forward", ["forward", "reject"])
# which directions are schema-checked, and what a failed check does
OCPPGW_VALIDATION = cfg.choice("OCPPGW_VALIDATION", "all", ["all", "upstream", "downstream", "off"])
OCPPGW_VALIDATION_FAILURE = cfg.choice("OCPPGW_VALIDATION_FAILURE", "reject", ["reject", "log"])
# directory of compiled schema validators, reused by every start (writable by the gateway's user
# only); empty = compile them in every process (~2.6 CPU-s each)
OCPPGW_SCHEMA_CACHE = cfg.str("OCPPGW_SCHEMA_CACHE", str(BASE_DIR / ".cache" / "schemas"))

# --- Gateway: backend side (MQTT) ---------------------------------------------------------------
# broker URL: mqtt://user:pass@host:1883 or mqtts:// for TLS
MQTT_URL = cfg.url("MQTT_URL", "mqtt://127.0.0.1:1883", schemes=["mqtt", "mqtts"])
# MQTT protocol version; 5 adds Response Topic / Correlation Data for backends that use them
OCPPGW_MQTT_PROTOCOL = cfg.choice("OCPPGW_MQTT_PROTOCOL", "5", ["5", "3.1.1"])
# shared-subscription group of this deployment's processes; two deployments on one broker need two
OCPPGW_SHARE_GROUP = cfg.parsed("OCPPGW_SHARE_GROUP", "ocppgw", topics.share_group)
# the EMQX 5.x topic defaults, for backends migrating from it; "seed" = EMQX 4.x plugin topics
OCPPGW_TOPIC_PRESET = cfg.choice("OCPPGW_TOPIC_PRESET", "seed", ["seed", "emqx5"])
_emqx5 = OCPPGW_TOPIC_PRESET == "emqx5"
# topic for CALLs and SENDs from stations
OCPPGW_UPSTREAM_TOPIC = cfg.topic(
    "OCPPGW_UPSTREAM_TOPIC", "ocpp/cp/${cid}" if _emqx5 else "ocpp/cp/${cid}/${action}"
)
# topic for stations' CALLRESULTs
OCPPGW_REPLY_TOPIC = cfg.topic(
    "OCPPGW_REPLY_TOPIC", "ocpp/cp/${cid}/Reply" if _emqx5 else "ocpp/cp/Reply/${cid}"
)
# topic for stations' CALLERRORs and CALLRESULTERRORs, and the gateway's answers to backend CALLs
OCPPGW_ERROR_TOPIC = cfg.topic(
    "OCPPGW_ERROR_TOPIC", "ocpp/cp/${cid}/Reply" if _emqx5 else "ocpp/cp/Error/${cid}"
)
# topic for gateway notices about traffic that is no answer to a backend CALL
OCPPGW_NOTICE_TOPIC = cfg.topic("OCPPGW_NOTICE_TOPIC", "ocpp/gw/Notice/${cid}")
# filter subscribed per connected station for backend messages; must contain ${cid}
OCPPGW_DOWNSTREAM_TOPIC = cfg.topic(
    "OCPPGW_DOWNSTREAM_TOPIC", "ocpp/cs/${cid}" if _emqx5 else "ocpp/cs/${cid}/#", downstream=True
)
# retained connected/disconnected events per station
OCPPGW_PRESENCE_TOPIC = cfg.topic("OCPPGW_PRESENCE_TOPIC", "ocpp/presence/${cid}")
# QoS of everything the gateway publishes and subscribes
OCPPGW_MQTT_QOS = cfg.int("OCPPGW_MQTT_QOS", 2 if _emqx5 else 1, min_value=0, max_value=2)
# frames buffered in memory while the broker is away
OCPPGW_MQTT_BUFFER = cfg.int("OCPPGW_MQTT_BUFFER", 100000, min_value=100)
# seconds without a broker before station sockets are closed (1013) and new ones refused
OCPPGW_BROKER_GRACE_S = cfg.int("OCPPGW_BROKER_GRACE_S", 30, min_value=1)
# backend CALLs waiting per station (one is in flight at a time, as OCPP-J requires)
OCPPGW_QUEUE_LEN = cfg.int("OCPPGW_QUEUE_LEN", 100, min_value=1)
# seconds a CALL may wait for its answer, queue time included (0 = no timeout)
OCPPGW_CALL_TIMEOUT_S = cfg.float("OCPPGW_CALL_TIMEOUT_S", 30.0, min_value=0)
# seconds the old password keeps working after a rotation through OCPP (stations reconnect)
OCPPGW_ROTATION_GRACE_S = cfg.int("OCPPGW_ROTATION_GRACE_S", 3600, min_value=0)
# seconds over which SIGTERM closes the held stations (1001), so they spread over other nodes
OCPPGW_DRAIN_S = cfg.int("OCPPGW_DRAIN_S", 0, min_value=0, max_value=3600)
# name of this gateway process in presence events and node topics; default host:pid
OCPPGW_NODE = cfg.str("OCPPGW_NODE", "")

# --- Message log ----------------------------------------------------------------------------------
# payload bytes kept per logged frame
OCPPGW_LOG_PAYLOAD_BYTES = cfg.int("OCPPGW_LOG_PAYLOAD_BYTES", 4096, min_value=0)
# days of message log kept; older rows are pruned hourly and by `manage.py prunelogs`
OCPPGW_LOG_RETENTION_DAYS = cfg.int("OCPPGW_LOG_RETENTION_DAYS", 7, min_value=1)
# rows waiting for the database; past this, rows are dropped and counted, frames still flow
OCPPGW_LOG_QUEUE = cfg.int("OCPPGW_LOG_QUEUE", 50000, min_value=100)
# seconds between log flushes (rows also flush when a batch of 500 is ready)
OCPPGW_LOG_FLUSH_S = cfg.float("OCPPGW_LOG_FLUSH_S", 0.5, min_value=0.05)
# "false" turns the message log off (frames still flow)
OCPPGW_LOG_ENABLED = cfg.bool("OCPPGW_LOG_ENABLED", True)

# --- Operator surfaces ----------------------------------------------------------------------------
# second listener for portal, admin, API and metrics; 0 = served on the stations' port
OCPPGW_ADMIN_PORT = cfg.int("OCPPGW_ADMIN_PORT", 0, min_value=0, max_value=65535)
# addresses of TLS proxies whose forwarded headers are believed (comma-separated IPs/CIDRs)
OCPPGW_TRUSTED_PROXIES = cfg.list("OCPPGW_TRUSTED_PROXIES", [])

cfg.finish()
