"""Portal station views: the inventory, one station's page, their JSON."""

import datetime

from django.urls import reverse


# --- the inventory -------------------------------------------------------------------------------
def test_inventory_lists_every_station_with_state_filters_in_fixed_queries(
    admin_client, make_station, django_assert_num_queries
):
    for i in range(5):
        make_station(f"LIVE{i}", connected=True, frames_in=i)
    make_station("GONE1")
    # session, user, rows, fleet counts, recently refused
    with django_assert_num_queries(5):
        response = admin_client.get(reverse("portal:stations"))
    body = response.content.decode()
    assert "LIVE0" in body and "LIVE4" in body and "GONE1" in body
    assert 'data-count="online">5<' in body and 'data-count="offline">1<' in body
    offline = admin_client.get(reverse("portal:stations"), {"state": "offline"}).content.decode()
    assert "GONE1" in offline and "LIVE0" not in offline


def test_inventory_pages_sort_and_search_in_fixed_queries(
    admin_client, make_station, django_assert_num_queries
):
    from portal import inventory

    now = datetime.datetime.now(datetime.UTC)
    for i in range(inventory.PAGE_SIZE + 5):
        make_station(f"INV{i:03d}", last_frame_at=now - datetime.timedelta(seconds=i))
    make_station("OTHER1")
    url = reverse("portal:stations-live")
    with django_assert_num_queries(4):  # session, user, rows, fleet counts
        first = admin_client.get(url).json()
    assert first["pages"] == 2 and len(first["stations"]) == inventory.PAGE_SIZE
    second = admin_client.get(url, {"page": 2}).json()["stations"]
    assert {s["cid"] for s in first["stations"]}.isdisjoint(s["cid"] for s in second)
    newest = admin_client.get(url, {"sort": "last_seen"}).json()["stations"]
    assert [s["cid"] for s in newest[:2]] == ["INV000", "INV001"]
    with django_assert_num_queries(5):  # and the count of what the search matches
        found = admin_client.get(url, {"q": "inv05"}).json()
    assert [s["cid"] for s in found["stations"]] == [f"INV05{i}" for i in range(5)]
    assert found["matching"] == 5 and found["counts"]["all"] == inventory.PAGE_SIZE + 6
    row = found["stations"][0]
    assert row["online"] is False and row["url"] == reverse("portal:station", args=["INV050"])
    junk = admin_client.get(url, {"page": "x", "sort": "nope", "state": "weird"}).json()
    assert junk["page"] == 1 and len(junk["stations"]) == inventory.PAGE_SIZE


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


# --- validation policy -------------------------------------------------------------------------
def test_policy_is_set_on_the_station_page_and_marks_the_change_for_the_gateway(
    admin_client, make_station
):
    station = make_station("CPPOL", frames_lenient=4)
    page = admin_client.get(reverse("portal:station", args=["CPPOL"])).content.decode()
    assert 'id="policy-form"' in page and 'data-field="frames_lenient">4<' in page
    response = admin_client.post(
        reverse("portal:policy", args=["CPPOL"]), {"validation_policy": "lenient"}
    )
    assert response.status_code == 302
    station.refresh_from_db()
    assert station.validation_policy == "lenient"
    # the gateway's poll picks up policy changes by this stamp; credentials are untouched
    assert station.policy_changed_at is not None and station.credentials_changed_at is None
    admin_client.post(reverse("portal:policy", args=["CPPOL"]), {"validation_policy": "sideways"})
    station.refresh_from_db()
    assert station.validation_policy == "lenient"


def test_policy_change_needs_the_change_station_permission(client, operator, make_station):
    make_station("CPPOL2")
    client.force_login(operator)
    page = client.get(reverse("portal:station", args=["CPPOL2"])).content.decode()
    assert 'id="policy-form"' not in page
    response = client.post(reverse("portal:policy", args=["CPPOL2"]), {"validation_policy": "log"})
    assert response.status_code == 403


def test_station_page_shows_what_the_station_said(admin_client, make_station):
    make_station(
        "CPFACT",
        vendor="Acme",
        model="X1",
        serial_number="SN-9",
        firmware_version="1.2.3",
        connectors={
            "1": {
                "status": "Faulted",
                "error_code": "GroundFailure",
                "at": "2026-12-06T10:00:00+00:00",
            }
        },
    )
    body = admin_client.get(reverse("portal:station", args=["CPFACT"])).content.decode()
    assert "Acme X1" in body and "SN-9" in body and "1.2.3" in body
    assert "Faulted" in body and "GroundFailure" in body
    live = admin_client.get(reverse("portal:station-live", args=["CPFACT"])).json()["station"]
    assert live["connectors"]["1"]["status"] == "Faulted" and live["vendor"] == "Acme"
