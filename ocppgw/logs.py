"""Log line formats (OCPPGW_LOG_FORMAT=plain|json) carrying the station and frame being handled.

The consumer sets `cid_var` when a station connects (its task keeps it for every later log line)
and the session sets `unique_id_var` per frame; a record's own `extra={"cid": …}` wins.
"""

import contextvars
import datetime
import logging

import orjson

cid_var: contextvars.ContextVar[str] = contextvars.ContextVar("ocppgw_cid", default="")
unique_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("ocppgw_unique_id", default="")


def _printable(text: str) -> str:
    """Station-supplied text (a UniqueId) escaped, so it cannot forge or break log lines."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class ContextFilter(logging.Filter):
    """Give every record `cid`, `unique_id` and a ready-made ` [cid=… id=…]` `context` text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "cid"):
            record.cid = cid_var.get()
        if not hasattr(record, "unique_id"):
            record.unique_id = unique_id_var.get() if record.cid else ""
        parts = [f"cid={_printable(record.cid)}"] if record.cid else []
        if record.unique_id:
            parts.append(f"id={_printable(record.unique_id)}")
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (Loki, Elasticsearch, CloudWatch)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "cid", ""):
            entry["cid"] = record.cid
        if getattr(record, "unique_id", ""):
            entry["unique_id"] = record.unique_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def config(log_format: str, level: str) -> dict:
    """The LOGGING dict for settings.py."""
    formatter = (
        {"()": "ocppgw.logs.JsonFormatter"} if log_format == "json" else {"format": PLAIN_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "ocppgw.logs.ContextFilter"}},
        "formatters": {"line": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "filters": ["context"],
            }
        },
        "loggers": {
            "ocppgw": {"handlers": ["console"], "level": level, "propagate": False},
            "django": {"handlers": ["console"], "level": "WARNING"},
        },
    }
