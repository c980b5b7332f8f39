"""Portal station views: the connected list, one station's page, their JSON."""

import datetime

from django.urls import reverse


# --- connected stations ------------------------------------------------------------------------
def test_stations_page_lists_connected_stations_in_fixed_queries(
    admin_client, make_station, django_assert_num_queries
):
    for i in range(5):
        make_station(f"LIVE{i}", connected=True, frames_in=i)
    make_station("GONE1")
    # session, user, rows, count, recently refused
    with django_assert_num_queries(5):
        response = admin_client.get(reverse("portal:stations"))
    body = response.content.decode()
    assert "LIVE0" in body and "LIVE4" in body
    assert "GONE1" not in body


def test_live_json_has_the_columns_and_search(
    admin_client, make_station, django_assert_num_queries
):
    make_station("ALPHA1", connected=True, version="2.0.1", frames_in=7, frames_out=3)
    make_station("BETA1", connected=True)
    make_station("ALPHA2")  # offline
    with django_assert_num_queries(4):
        data = admin_client.get(reverse("portal:stations-live"), {"q": "alpha"}).json()
    assert [s["cid"] for s in data["stations"]] == ["ALPHA1"]
    row = data["stations"][0]
    assert row["ocpp_version"] == "2.0.1" and row["frames_in"] == 7 and row["frames_out"] == 3
    assert row["node"] == "test:1" and row["connected_at"] and row["last_frame_at"]
    assert row["url"] == reverse("portal:station", args=["ALPHA1"])
    assert data["total"] == 2


def test_open_any_station_by_cid_redirects(admin_client, make_station):
    make_station("CP-Open")
    response = admin_client.get(reverse("portal:stations"), {"open": "cp-open"})
    assert response.status_code == 302
    assert admin_client.get(response.url).status_code == 200
    refused = admin_client.get(reverse("portal:stations"), {"open": "a/b"})
    assert "may use only" in refused.content.decode()


# --- station page ------------------------------------------------------------------------------
def test_station_page_shows_frames_presence_and_refusal(
    admin_client, make_station, make_log, django_assert_num_queries
):
    station = make_station(
        "CPX01",
        connected=True,
        last_refused_at=datetime.datetime.now(datetime.UTC),
        last_refused_reason="wrong password",
    )
    make_log(station, direction="gw", outcome="connected", reason="OCPP 1.6 from 10.0.0.1", ago_s=9)
    make_log(station, message_type=2, unique_id="u1", action="BootNotification", ago_s=8)
    make_log(station, direction="out", message_type=3, unique_id="u1", action="BootNotification")
    # session, user, station, frames, presence
    with django_assert_num_queries(5):
        response = admin_client.get(reverse("portal:station", args=["cpx01"]))
    body = response.content.decode()
    assert "wrong password" in body
    assert "BootNotification" in body and "OCPP 1.6 from 10.0.0.1" in body
    assert 'value="Reset"' in body or ">Reset<" in body  # 1.6 CSMS actions offered
    assert "command-examples" in body


def test_station_live_json(admin_client, make_station, make_log, django_assert_num_queries):
    station = make_station("CPLIVE", connected=True)
    make_log(station, message_type=2, unique_id="9", action="Heartbeat", payload="[2]")
    with django_assert_num_queries(5):
        data = admin_client.get(reverse("portal:station-live", args=["CPLIVE"])).json()
    assert data["station"]["connected"] is True
    assert data["frames"][0]["action"] == "Heartbeat"
    assert data["frames"][0]["url"].startswith("/portal/messages/")


def test_unknown_station_is_404(admin_client, db):
    assert admin_client.get(reverse("portal:station", args=["NOPE"])).status_code == 404
