"""ocppgw/logs.py: log lines carry the station and the frame being handled, plain or JSON."""

import contextvars
import json
import logging

from ocppgw import logs


def _record(**extra) -> logging.LogRecord:
    record = logging.LogRecord(
        "ocppgw.session", logging.INFO, __file__, 1, "hello %s", ("x",), None
    )
    record.__dict__.update(extra)
    logs.ContextFilter().filter(record)
    return record


def test_plain_lines_name_the_cid_and_unique_id_from_the_context():
    def run():
        logs.cid_var.set("CP001")
        logs.unique_id_var.set("42")
        return _record()

    record = contextvars.copy_context().run(run)
    line = logging.Formatter(logs.PLAIN_FORMAT).format(record)
    assert line.endswith("INFO ocppgw.session [cid=CP001 id=42] hello x")


def test_extra_wins_over_the_context_and_lines_without_a_station_stay_short():
    record = _record(cid="CP9", unique_id="7")
    assert (record.cid, record.unique_id, record.context) == ("CP9", "7", " [cid=CP9 id=7]")
    bare = contextvars.Context().run(_record)
    assert logging.Formatter(logs.PLAIN_FORMAT).format(bare).endswith("INFO ocppgw.session hello x")


def test_json_lines_are_one_object_with_cid_and_unique_id():
    record = _record(cid="CP001", unique_id="42")
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "hello x"
    assert (entry["cid"], entry["unique_id"], entry["level"]) == ("CP001", "42", "INFO")
    assert entry["logger"] == "ocppgw.session" and entry["ts"].endswith("+00:00")


def test_settings_pick_the_formatter():
    assert "()" in logs.config("json", "INFO")["formatters"]["line"]
    plain = logs.config("plain", "DEBUG")
    assert plain["formatters"]["line"]["format"] == logs.PLAIN_FORMAT
    assert plain["loggers"]["ocppgw"]["level"] == "DEBUG"
