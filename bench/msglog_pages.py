"""Message-log pages at scale: bulk-load N rows (default 1,000,000) into a PostgreSQL database and
time the portal's filtered first page and next page (the same code the portal and API run).

    python bench/msglog_pages.py                      # creates/reloads database ocppgw_bench
    python bench/msglog_pages.py --reuse              # keep the loaded rows, only time
    python bench/msglog_pages.py --explain            # also print each first page's plan

The server is PG_URL (default postgres://postgres@127.0.0.1:5432); the database is dropped and
created again unless --reuse. Not a unit test: it prints a table; the target is < 100 ms a page.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 100.0
STATIONS = 2000
DAYS = 7

# (action, share of CALLs): a realistic 1.6 fleet, with a few rare actions an operator hunts for
ACTIONS = [
    ("Heartbeat", 0.40),
    ("MeterValues", 0.30),
    ("StatusNotification", 0.15),
    ("Authorize", 0.05),
    ("StartTransaction", 0.04),
    ("StopTransaction", 0.04),
    ("BootNotification", 0.015),
    ("DataTransfer", 0.004),
    ("Reset", 0.0005),
    ("FirmwareStatusNotification", 0.0005),
]

# one INSERT ... SELECT generates every row inside PostgreSQL (seconds, not minutes)
LOAD_SQL = """
INSERT INTO stations_messagelog
  (created, station_id, cid, direction, message_type, unique_id, action, size, payload, outcome,
   reason, topic)
SELECT
  now() - make_interval(secs => (%(rows)s - g)::float8 * %(span_s)s / %(rows)s),
  s.id, s.cid,
  CASE WHEN r.d < 0.50 THEN 'in' WHEN r.d < 0.97 THEN 'out' ELSE 'gw' END,
  CASE WHEN r.d >= 0.97 THEN CASE WHEN r.e < 0.5 THEN NULL ELSE 4 END
       WHEN r.e < 0.985 THEN CASE WHEN r.d < 0.50 THEN 2 ELSE 3 END ELSE 4 END,
  'u' || (g / 2)::text,
  a.action,
  90 + (g %% 60),
  '[2,"u' || (g / 2)::text || '","' || a.action || '",{"connectorId":1,"status":"Available"}]',
  CASE WHEN r.d >= 0.97 THEN (ARRAY['connected','disconnected','refused'])[1 + (g %% 3)]
       WHEN r.d < 0.50 THEN 'published' ELSE 'sent' END,
  '', ''
FROM generate_series(1, %(rows)s) AS g
CROSS JOIN LATERAL (SELECT random() + 0 * g AS d, random() + 0 * g AS e, random() + 0 * g AS a) AS r
JOIN stations_station s ON s.id = 1 + (hashint4(g) & 2147483647) %% %(stations)s
JOIN LATERAL (
  SELECT action FROM bench_actions WHERE r.a < upto ORDER BY upto LIMIT 1
) a ON true
"""


def _server_url(args) -> str:
    return args.pg_url.rstrip("/")


def prepare(args) -> None:
    """(Re)create the database, migrate it with Django, and load the rows."""
    with psycopg.connect(f"{_server_url(args)}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')
    django_setup(args)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connection

    started = time.monotonic()
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO stations_station (cid, cid_key, enabled, security_profile, created_at,"
            " previous_password, ocpp_version, connection_id, node, frames_in, frames_out,"
            " last_refused_reason)"
            " SELECT 'CP' || lpad(g::text, 5, '0'), 'cp' || lpad(g::text, 5, '0'), true, 1, now(),"
            " '', '1.6', '', '', 0, 0, '' FROM generate_series(1, %s) g",
            [STATIONS],
        )
        cur.execute("CREATE TEMP TABLE bench_actions (action text, upto float)")
        total = 0.0
        for action, share in ACTIONS:
            total += share
            cur.execute("INSERT INTO bench_actions VALUES (%s, %s)", [action, total])
        cur.execute("UPDATE bench_actions SET upto = upto / %s", [total])
        cur.execute(LOAD_SQL, {"rows": args.rows, "span_s": DAYS * 86400, "stations": STATIONS})
        cur.execute("ANALYZE stations_messagelog")
        cur.execute("ANALYZE stations_station")
    print(f"loaded {args.rows:,} rows in {time.monotonic() - started:.1f} s", flush=True)


def django_setup(args) -> None:
    os.environ["DATABASE_URL"] = f"{_server_url(args)}/{args.db}"
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ocppgw.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def cases():
    """(name, Filters) pairs: what an operator filters by, common and rare."""
    import datetime

    from portal.msgsearch import Filters

    now = datetime.datetime.now(datetime.UTC)
    day3 = now - datetime.timedelta(days=3)
    return [
        ("no filter", Filters()),
        ("station", Filters(station="cp01234")),
        ("station + in + CALL", Filters(station="CP00042", direction="in", message_type=2)),
        ("direction out", Filters(direction="out")),
        ("type CALLERROR (1.5%)", Filters(message_type=4)),
        ("type SEND (none on 1.6)", Filters(message_type=6)),
        ("direction gateway", Filters(direction="gw")),
        ("action Heartbeat (40%)", Filters(action="Heartbeat")),
        ("action Reset (0.05%)", Filters(action="Reset")),
        ("action + in + CALL", Filters(action="BootNotification", direction="in", message_type=2)),
        ("action absent", Filters(action="UnlockConnector")),
        ("UniqueId", Filters(unique_id="u250000")),
        ("1 h window, 3 days ago", Filters(since=day3, until=day3 + datetime.timedelta(hours=1))),
        (
            "station + action + window",
            Filters(
                station="CP00007", action="MeterValues", since=now - datetime.timedelta(days=5)
            ),
        ),
    ]


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall time in ms of `fn()` over `repeat` warm runs, and its last result."""
    fn()  # warm the cache, as an operator's second click would be
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), result


def measure(args) -> bool:
    from django.db import connection

    from portal import msgsearch
    from stations.models import MessageLog

    print(f"database {args.db}: ~{MessageLog.objects.count():,} rows\n")

    def page_of(filters, cursor=""):
        # what the portal's message-log view runs: the keyset page and the pair links
        page = msgsearch.page(filters, cursor)
        msgsearch.partners(page.rows)
        return page

    head = f"{'filter':<28} {'rows':>5} {'first page ms':>14} {'next page ms':>13}  ok"
    print(head)
    print("-" * len(head))
    all_ok = True
    for name, filters in cases():
        first_ms, first = timed(lambda f=filters: page_of(f), args.repeat)
        next_ms, nxt = (0.0, None)
        if first.next_cursor:
            next_ms, nxt = timed(lambda f=filters, c=first.next_cursor: page_of(f, c), args.repeat)
        ok = first_ms < TARGET_MS and next_ms < TARGET_MS
        all_ok &= ok
        shown = len(first.rows) + (len(nxt.rows) if nxt else 0)
        print(f"{name:<28} {shown:>5} {first_ms:>14.1f} {next_ms:>13.1f}  {'yes' if ok else 'NO'}")
        if args.explain:
            qs = msgsearch.queryset(filters, msgsearch.resolve_station(filters.station))
            with connection.cursor() as cur:
                sql, params = qs[: msgsearch.PAGE_ROWS + 1].query.sql_with_params()
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                print("\n".join("      " + line for (line,) in cur.fetchall()))
    print(f"\n(median of {args.repeat} warm runs; target < {TARGET_MS:.0f} ms per page)")
    return all_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pg-url", default=os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432")
    )
    parser.add_argument("--db", default="ocppgw_bench")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="time the rows already loaded")
    parser.add_argument("--explain", action="store_true", help="print each first page's plan")
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    args = parser.parse_args()
    if args.reuse:
        django_setup(args)
    else:
        prepare(args)
    ok = measure(args)
    if args.drop:
        from django.db import connection

        connection.close()
        with psycopg.connect(f"{_server_url(args)}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
