"""Portal message log and traffic: keyset paging, filters, links, per-minute counts."""

import datetime

import pytest
from django.urls import reverse

from portal import msgsearch, traffic
from stations.models import MessageLog


# --- message log -------------------------------------------------------------------------------
def _fill_log(make_log, station, n):
    return [
        make_log(station, message_type=2, unique_id=str(i), action="Heartbeat", ago_s=n - i)
        for i in range(n)
    ]


def test_message_log_pages_by_keyset_without_gaps_or_repeats(
    admin_client, make_station, make_log, django_assert_num_queries
):
    station = make_station("CPLOG")
    rows = _fill_log(make_log, station, 120)
    seen, query = [], {"station": "cplog"}
    for _ in range(5):
        # session, user, station lookup, page, partners
        with django_assert_num_queries(5):
            response = admin_client.get(reverse("portal:messages"), query)
        page = response.context["page"]
        seen += [r.id for r in page.rows]
        if not page.next_cursor:
            break
        query = {"station": "cplog", "after": page.next_cursor}
    assert seen == [r.id for r in reversed(rows)]


def test_message_log_filters(admin_client, make_station, make_log):
    a, b = make_station("CPA"), make_station("CPB")
    make_log(a, message_type=2, action="BootNotification", unique_id="1", ago_s=3600)
    make_log(a, direction="out", message_type=3, action="BootNotification", unique_id="1")
    make_log(b, message_type=2, action="Heartbeat", unique_id="2")
    make_log(b, direction="gw", outcome="refused", reason="wrong password")

    def found(**query):
        response = admin_client.get(reverse("portal:messages"), query)
        return [(r.cid, r.direction, r.message_type) for r in response.context["page"].rows]

    assert found(station="cpb") == [("CPB", "gw", None), ("CPB", "in", 2)]
    assert found(direction="out") == [("CPA", "out", 3)]
    assert found(type="2") == [("CPB", "in", 2), ("CPA", "in", 2)]
    assert found(action="BootNotification", type="2") == [("CPA", "in", 2)]
    assert found(uid="1") == [("CPA", "out", 3), ("CPA", "in", 2)]
    now = datetime.datetime.now(datetime.UTC)
    until = (now - datetime.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    assert found(until=until) == [("CPA", "in", 2)]
    since = (now - datetime.timedelta(minutes=30)).isoformat()
    assert len(found(since=since)) == 3


def test_request_and_answer_link_both_ways(admin_client, make_station, make_log):
    station = make_station("CPPAIR")
    call = make_log(station, message_type=2, unique_id="42", action="Authorize", ago_s=1)
    answer = make_log(station, direction="out", message_type=3, unique_id="42", action="Authorize")
    body = admin_client.get(reverse("portal:messages"), {"station": "CPPAIR"}).content.decode()
    assert reverse("portal:message", args=[answer.id]) + '" class="pair">answer' in body
    assert reverse("portal:message", args=[call.id]) + '" class="pair">← request' in body
    detail = admin_client.get(reverse("portal:message", args=[answer.id])).content.decode()
    assert reverse("portal:message", args=[call.id]) in detail


def test_cursor_round_trips():
    row = MessageLog(id=7, created=datetime.datetime(2025, 5, 6, 7, 8, 9, 123456, datetime.UTC))
    assert msgsearch.decode_cursor(msgsearch.encode_cursor(row)) == (row.created, 7)
    assert msgsearch.decode_cursor("junk") is None
    assert msgsearch.decode_cursor("") is None


def test_bad_filter_values_show_errors_not_500(admin_client, db):
    response = admin_client.get(reverse("portal:messages"), {"since": "yesterday", "type": "9"})
    assert response.status_code == 200
    assert response.context["form"].errors


# --- traffic -----------------------------------------------------------------------------------
def test_traffic_counts_per_minute_in_the_database(
    admin_client, make_station, make_log, django_assert_num_queries
):
    station = make_station("CPTRAF")
    make_log(station, message_type=2, action="Heartbeat")
    make_log(station, message_type=2, action="Heartbeat")
    make_log(station, direction="out", message_type=4, outcome="sent")
    make_log(make_station("OTHER"), message_type=2, outcome="rejected")
    with django_assert_num_queries(4):  # session, user, station, GROUP BY
        data = admin_client.get(reverse("portal:traffic-data"), {"station": "cptraf"}).json()
    assert len(data["t"]) == traffic.WINDOW_MIN
    assert (sum(data["in"]), sum(data["out"]), sum(data["errors"])) == (2, 1, 1)
    whole = admin_client.get(reverse("portal:traffic-data")).json()
    assert (sum(whole["in"]), sum(whole["errors"])) == (3, 2)
    with django_assert_num_queries(4):  # session, user, station, busiest stations
        page = admin_client.get(reverse("portal:traffic"), {"station": "cptraf"})
    assert [b["cid"] for b in page.context["busiest"]] == ["CPTRAF", "OTHER"]


def test_message_detail_in_fixed_queries(
    admin_client, make_station, make_log, django_assert_num_queries
):
    row = make_log(make_station("CPDET"), message_type=2, unique_id="7", action="Heartbeat")
    with django_assert_num_queries(4):  # session, user, row with station, its partner
        response = admin_client.get(reverse("portal:message", args=[row.id]))
    assert "No matching answer" in response.content.decode()


# --- export ---------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_export_streams_every_filtered_row_in_chunks(admin_user):
    import csv
    import io

    import orjson
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    from portal import export
    from stations.models import MessageLog
    from tests.conftest import new_station

    station = await sync_to_async(new_station)("CPEXP")
    now = datetime.datetime.now(datetime.UTC)
    rows = [
        MessageLog(
            created=now - datetime.timedelta(milliseconds=n // 3),  # ties inside one timestamp
            cid=station.cid,
            station_id=station.id,
            direction="in",
            message_type=2,
            unique_id=f"u{n}",
            action="Heartbeat" if n % 2 else "StatusNotification",
            payload=f'[2,"u{n}","Heartbeat",{{}}]',
            outcome="published",
        )
        for n in range(2 * export.CHUNK_ROWS + 7)
    ]
    await sync_to_async(MessageLog.objects.bulk_create)(rows)
    client = AsyncClient()
    await sync_to_async(client.force_login)(admin_user)
    response = await client.get(
        "/portal/messages/export", {"station": "cpexp", "action": "Heartbeat"}
    )
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert 'attachment; filename="ocppgw-log-' in response["Content-Disposition"]
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    lines = list(csv.reader(io.StringIO(body)))
    assert lines[0] == list(export.FIELDS)
    uids = [line[5] for line in lines[1:]]
    heartbeats = {f"u{n}" for n in range(len(rows)) if n % 2}
    assert len(uids) == len(heartbeats) and set(uids) == heartbeats  # none twice, none lost
    assert lines[1][1].endswith("Z")
    response = await client.get("/portal/messages/export", {"station": "CPEXP", "format": "ndjson"})
    records = [
        orjson.loads(line)
        for line in b"".join([c async for c in response.streaming_content]).splitlines()
    ]
    assert len(records) == len(rows) and records[0]["cid"] == "CPEXP"
    assert (await client.get("/portal/messages/export", {"format": "xml"})).status_code == 400
