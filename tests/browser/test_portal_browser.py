"""The portal in a real browser against a real gateway process and the real broker.

The tests run in order on one gateway: log in, a station appears live, Reset round-trips from the
station page, a BootNotification rule re-routes the next boot, the log finds it, the station
disappears live. Screenshots of every page land in artifacts/screenshots/.
"""

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ADMIN, shoot, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LIVE_S = 2.0  # the bound for a station to appear or disappear without a reload


def test_login_then_a_connecting_station_appears_live(rig, page):
    page.goto(f"{rig.gateway.url}/portal/")
    expect(page).to_have_url(re.compile(r"/portal/login/"))
    shoot(page, "01-login")
    page.fill("input[name=username]", ADMIN[0])
    page.fill("input[name=password]", ADMIN[1])
    # updates are pushed (stations/live.py): the page opens the portal's live socket, and
    # polls only every 30 s while it is open
    live = lambda ws: ws.url.endswith("/portal/live/")  # noqa: E731
    with page.expect_websocket(live, timeout=10000):
        page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Connected stations")
    row = page.locator(f"#stations tr[data-cid='{rig.cid}']")
    expect(row).to_have_count(0)

    rig.station.connect()
    connected_at = time.monotonic()
    expect(row).to_be_visible(timeout=LIVE_S * 1000)
    assert time.monotonic() - connected_at <= LIVE_S
    expect(row).to_contain_text("1.6")
    expect(row).to_contain_text(rig.gateway.env["OCPPGW_NODE"])
    rig.station.boot()  # the backend answers it over MQTT
    expect(row.locator("td").nth(5)).not_to_have_text("0", timeout=4000)  # frames in counted
    shoot(page, "02-stations-live")


def test_reset_from_the_station_page_shows_the_stations_answer(rig, page):
    page.goto(f"{rig.gateway.url}/portal/stations/{rig.cid}/")
    expect(page.locator("#status-pill")).to_have_text("connected")
    page.select_option("#command-action", "Reset")
    expect(page.locator("#command-payload")).to_have_value(re.compile(r'"type": "Hard"'))
    page.click("#command-send")
    result = page.locator("#command-result")
    expect(result).to_contain_text("the station answered", timeout=10000)
    expect(result).to_contain_text("Accepted")
    shoot(page, "03-station-reset-answered")

    # an invalid payload never leaves the portal
    page.fill("#command-payload", '{"type": "Sideways"}')
    page.click("#command-send")
    expect(result).to_contain_text("Not sent")
    expect(result).to_contain_text("at type (enum)")


def test_a_bootnotification_rule_routes_the_next_boot(rig, page):
    page.goto(f"{rig.gateway.url}/portal/rules/")
    page.select_option("select[name=direction]", "upstream")
    page.fill("input[name=action]", "BootNotification")
    page.fill("input[name=template]", "ocpp/cp/${cid}/Notify/${action}")
    page.fill("#preview-cid", rig.cid)
    page.click("#preview-button")
    topic = f"ocpp/cp/{rig.cid}/Notify/BootNotification"
    expect(page.locator("#preview-result")).to_have_text(f"→ {topic}")
    shoot(page, "04-rules-preview")
    page.click("#rule-form button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("Saved")
    saved_at = time.monotonic()
    expect(page.locator("#rules")).to_contain_text("ocpp/cp/${cid}/Notify/${action}")
    shoot(page, "05-rules-saved")

    time.sleep(max(0.0, LIVE_S - (time.monotonic() - saved_at)))  # the bound the issue sets
    assert rig.station.boot() is not None  # answered: the backend saw it on the new topic
    wait_until(lambda: rig.backend.arrived(topic, "BootNotification"), 5, f"a boot on {topic}")


def test_the_message_log_filter_finds_the_rerouted_boot(rig, page):
    page.goto(f"{rig.gateway.url}/portal/messages/")
    page.fill("input[name=station]", rig.cid.lower())  # identities are case-insensitive
    page.select_option("select[name=direction]", "in")
    page.select_option("select[name=type]", "2")
    page.fill("input[name=action]", "BootNotification")
    page.click("#filters button[type=submit]")
    rows = page.locator("#log tbody tr")
    expect(rows.first).to_contain_text("BootNotification")

    def both_boots_logged():  # the first boot and the re-routed one (the log flushes every 0.5 s)
        if rows.count() == 2:
            return True
        page.reload()
        return False

    wait_until(both_boots_logged, 5, "both BootNotifications in the filtered log")
    expect(rows.first.locator(".pair")).to_have_text("answer →")
    shoot(page, "06-message-log-filtered")
    rows.first.locator("td").first.locator("a").click()
    expect(page.locator("dl.facts")).to_contain_text(f"ocpp/cp/{rig.cid}/Notify/BootNotification")
    expect(page.locator("body")).to_contain_text("answer →")
    shoot(page, "07-message-detail")


def test_other_pages_render(rig, page):
    for path, name, text in [
        ("/portal/traffic/", "08-traffic", "Frames per minute"),
        (f"/portal/traffic/?station={rig.cid}", "09-traffic-station", rig.cid),
        ("/portal/exemptions/", "10-exemptions", "Validation exemptions"),
        ("/admin/stations/station/", "11-admin-stations", rig.cid),
        ("/admin/stations/messagelog/", "12-admin-messagelog", "BootNotification"),
    ]:
        page.goto(f"{rig.gateway.url}{path}")
        expect(page.locator("body")).to_contain_text(text)
        if "traffic" in path:
            expect(page.locator("#chart canvas").first).to_be_visible()
        shoot(page, name)
    page.goto(f"{rig.gateway.url}/admin/stations/station/")
    page.click(f"text={rig.cid}")
    expect(page.locator("body")).to_contain_text("Rotating it drops the live connection")
    shoot(page, "14-admin-station-password")


def test_a_disconnecting_station_disappears_live(rig, page):
    page.goto(f"{rig.gateway.url}/portal/")
    row = page.locator(f"#stations tr[data-cid='{rig.cid}']")
    expect(row).to_be_visible()
    rig.station.disconnect()
    gone_at = time.monotonic()
    expect(row).to_have_count(0, timeout=LIVE_S * 1000)
    assert time.monotonic() - gone_at <= LIVE_S
    page.goto(f"{rig.gateway.url}/portal/stations/{rig.cid}/")
    expect(page.locator("#status-pill")).to_have_text("offline")
    expect(page.locator("#presence")).to_contain_text("disconnected")
    shoot(page, "13-station-offline")


def test_rotating_the_password_in_admin_drops_the_live_socket(rig, page):
    rig.station.connect()
    page.goto(f"{rig.gateway.url}/admin/stations/station/?q={rig.cid}")
    page.click(f"text={rig.cid}")
    page.fill("input[name=new_password]", "rotated-password-000001")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    saved_at = time.monotonic()
    wait_until(rig.station.close_code, 3.0, "the gateway to close the rotated station's socket")
    assert time.monotonic() - saved_at <= 3.0
