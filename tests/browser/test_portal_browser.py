"""The portal in a real browser against a real gateway process and the real broker.

The tests run in order on one gateway: log in, a station appears live, Reset round-trips from the
station page, a BootNotification rule re-routes the next boot, the log finds it, the station
disappears live. Screenshots of every page land in artifacts/screenshots/.
"""

import re
import time
from pathlib import Path

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
    expect(page.locator("h1")).to_contain_text("Stations")
    # the inventory lists the station offline; the "online" filter shows it only once connected
    expect(page.locator(f"#stations tr[data-cid='{rig.cid}'] .pill")).to_have_text("offline")
    shoot(page, "01b-inventory")
    page.click("#state-filter a[data-state=online]")
    expect(page).to_have_url(re.compile(r"state=online"))
    row = page.locator(f"#stations tr[data-cid='{rig.cid}']")
    expect(row).to_have_count(0)

    rig.station.connect()
    connected_at = time.monotonic()
    expect(row).to_be_visible(timeout=LIVE_S * 1000)
    assert time.monotonic() - connected_at <= LIVE_S
    expect(row).to_contain_text("1.6")
    expect(row).to_contain_text(rig.gateway.env["OCPPGW_NODE"])
    rig.station.boot()  # the backend answers it over MQTT
    expect(row.locator("td").nth(6)).not_to_have_text("0", timeout=4000)  # frames in counted
    expect(row.locator("td").nth(4)).to_contain_text("ocppgw", timeout=4000)  # its Boot's vendor
    shoot(page, "02-stations-live")


def test_reset_from_the_station_page_shows_the_stations_answer(rig, page):
    page.goto(f"{rig.gateway.url}/portal/stations/{rig.cid}/")
    expect(page.locator("#status-pill")).to_have_text("connected")
    page.select_option("#command-action", "Reset")
    expect(page.locator("#command-payload")).to_have_value(re.compile(r'"type": "Hard"'))
    # a Reset is disruptive: the portal asks first; dismissed, nothing is sent
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#command-send")
    expect(page.locator("#command-result")).to_contain_text("Not sent: cancelled")
    assert "Reset (Hard) restarts the station" in asked[0]
    page.once("dialog", lambda dialog: dialog.accept())
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


def test_the_station_page_shows_what_the_station_said(rig, page):
    rig.station.status(1, "Available")
    rig.station.status(2, "Faulted", "GroundFailure")
    page.goto(f"{rig.gateway.url}/portal/stations/{rig.cid}/")
    expect(page.locator("[data-field=vendor_model]")).to_have_text("ocppgw Browser")
    connectors = page.locator("#connectors")
    # the writer flushes within a second; the page updates itself
    expect(connectors).to_contain_text("GroundFailure", timeout=5000)
    expect(connectors.locator("tr")).to_have_count(2)
    expect(page.locator("[data-field=last_boot_at]")).not_to_have_text("—")
    shoot(page, "03b-station-facts")


def test_the_audit_trail_records_the_reset(rig, page):
    page.goto(f"{rig.gateway.url}/portal/")
    page.click("nav >> text=Audit")
    row = page.locator("#audit tbody tr").first
    expect(row).to_contain_text("command")
    expect(row).to_contain_text(rig.cid)
    expect(row).to_contain_text('Reset {"type":"Hard"}')
    expect(row).to_contain_text("sent as")
    shoot(page, "03c-audit-trail")


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

    def both_boots_and_the_answer_logged():
        # the first boot, the re-routed one and its answer, which a later flush may write (the
        # log flushes every 0.5 s): the pair link shows only once the answer row is there
        if rows.count() == 2 and rows.first.locator(".pair").count() == 1:
            return True
        page.reload()
        return False

    wait_until(both_boots_and_the_answer_logged, 5, "both boots and the answer in the log")
    # the same filter as a download
    with page.expect_download() as download:
        page.click("#export-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("id,created,cid,direction") and len(lines) == 3, lines
    assert all(rig.cid in line and "BootNotification" in line for line in lines[1:])
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


def test_admin_lists_fit_a_1366_px_laptop(rig, page):
    """No sideways scrolling on the admin lists an operator reads most."""
    page.set_viewport_size({"width": 1366, "height": 768})
    for path in ("/admin/stations/station/", "/admin/stations/messagelog/"):
        page.goto(f"{rig.gateway.url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1366, f"{path} is {width} px wide"
    expect(page.locator(".object-tools")).to_contain_text("Open in the portal's log")
    shoot(page, "16-admin-messagelog-1366")


def test_a_disconnecting_station_disappears_live(rig, page):
    page.goto(f"{rig.gateway.url}/portal/?state=online")
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


def test_phone_width_and_dark_mode(rig, page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    page.goto(f"{rig.gateway.url}/portal/")
    links = page.locator(".topbar nav a")
    for i in range(links.count()):  # every item reachable: wrapped, never off-screen
        box = links.nth(i).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 23, 29)", background  # the dark palette, from the system setting
    shoot(page, "15-phone-dark")
