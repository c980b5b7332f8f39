"""Strict reading of settings from the environment.

django-environ reads `.env` and parses URLs, but on its own it turns `X=maybe` into False and
reports `int("abc")` without naming the key. Every reader here raises ImproperlyConfigured
naming the key and the accepted values, and records the key so `.env.example` and the README can
be checked against the settings module.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***: error messages and logs must not carry it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return parts._replace(netloc=f"{name}:***@{host}").geturl()


# every key read by any Config, in order: compared against .env.example and the README by tests
KEYS: list[str] = []


class Config:
    def __init__(self, env_file: Path | None = None):
        if env_file is not None and Path(env_file).is_file():
            # real environment variables win over the file (django-environ's setdefault)
            environ.Env.read_env(str(env_file))
        self.errors: list[str] = []

    def _raw(self, key: str) -> str | None:
        if key not in KEYS:
            KEYS.append(key)
        # NAME_FILE holds the path of a Docker secret; it wins over NAME
        path = os.environ.get(f"{key}_FILE")
        if path:
            try:
                return Path(path).read_text().strip()
            except OSError as exc:
                self._fail(f"{key}_FILE", f"cannot read {path}: {exc.strerror}")
                return None
        return os.environ.get(key)

    def _fail(self, key: str, why: str) -> None:
        self.errors.append(f"{key}: {why}")

    def finish(self) -> None:
        """Raise one error listing every bad key, after all settings were read."""
        if self.errors:
            raise ImproperlyConfigured("bad settings: " + "; ".join(self.errors))

    def str(self, key: str, default: str) -> str:
        value = self._raw(key)
        return default if value is None else value

    def secret(self, key: str, *, required: bool, dev_default: str) -> str:
        value = self._raw(key)
        if value:
            return value
        if required:
            self._fail(key, "required when DEBUG is false (set a long random value)")
        return dev_default

    def bool(self, key: str, default: bool) -> bool:
        value = self._raw(key)
        if value is None or value == "":
            return default
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        self._fail(key, f"expected true or false, got {value!r}")
        return default

    def _number(self, key, default, kind, min_value, max_value):
        value = self._raw(key)
        if value is None or value.strip() == "":
            return default
        try:
            number = kind(value.strip())
        except ValueError:
            self._fail(key, f"expected {kind.__name__}, got {value!r}")
            return default
        if (min_value is not None and number < min_value) or (
            max_value is not None and number > max_value
        ):
            self._fail(key, f"{number} is outside {min_value}..{max_value}")
            return default
        return number

    def int(self, key: str, default: int, min_value=None, max_value=None) -> int:
        return self._number(key, default, int, min_value, max_value)

    def float(self, key: str, default: float, min_value=None, max_value=None) -> float:
        return self._number(key, default, float, min_value, max_value)

    def choice(self, key: str, default: str, choices: list[str]) -> str:
        value = self._raw(key)
        if value is None:
            return default
        if value not in choices:
            self._fail(key, f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
            return default
        return value

    def parsed(self, key: str, default, parse):
        """A value read by `parse(text)`, whose ValueError becomes this key's error."""
        value = self._raw(key)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as exc:
            self._fail(key, str(exc))
            return default

    def list(self, key: str, default: list[str], allowed: list[str] | None = None) -> list[str]:
        value = self._raw(key)
        if value is None:
            return default
        items = [item.strip() for item in value.split(",") if item.strip()]
        bad = [item for item in items if allowed is not None and item not in allowed]
        if bad:
            self._fail(key, f"unknown {', '.join(bad)}; allowed: {', '.join(allowed)}")
            return default
        if key == "OCPPGW_TRUSTED_PROXIES":
            for item in items:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    self._fail(key, f"{item!r} is not an IP address or network")
        return items

    def url(self, key: str, default: str, schemes: list[str]) -> str:
        value = self._raw(key) or default
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises on a non-numeric port
        except ValueError:
            self._fail(key, f"bad port in {redact_url(value)!r}")
            return default
        if parts.scheme not in schemes or not parts.hostname:
            self._fail(
                key, f"expected {'|'.join(schemes)}://host[:port], got {redact_url(value)!r}"
            )
            return default
        return value

    def db(self, key: str, default: str) -> dict:
        value = self._raw(key) or default
        try:
            config = environ.Env.db_url_config(value)
        except Exception as exc:
            self._fail(key, f"cannot parse database URL ({exc})")
            return environ.Env.db_url_config(default)
        # django-environ passes an unknown scheme through as the ENGINE name
        if not config.get("ENGINE") or urlsplit(value).scheme not in environ.Env.DB_SCHEMES:
            self._fail(key, f"unsupported database URL scheme in {redact_url(value)!r}")
            return environ.Env.db_url_config(default)
        return config

    def topic(self, key: str, default: str, downstream: bool = False) -> str:
        from stations import topics  # pure module; imported late to keep settings import-light

        value = self._raw(key) or default
        problem = topics.validate(value, downstream=downstream)
        if problem:
            self._fail(key, problem)
            return default
        return value
