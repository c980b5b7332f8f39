"""Several gateway processes: the portal of one shows a station held by another, live, and its
kick closes that station's socket through Redis (the truth is the shared database)."""

import http.cookiejar
import json
import re
import time
import urllib.parse
import urllib.request

import pytest

from tests.browser.conftest import ADMIN, Gateway, Station, wait_until
from tests.conftest import unique_cid

pytestmark = pytest.mark.e2e

REDIS_URL = "redis://127.0.0.1:6379/0"


class PortalSession:
    """A logged-in operator speaking HTTP to one gateway process (cookies and CSRF as a browser)."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        page = self.opener.open(f"{base}/portal/login/", timeout=5).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        self.post("/portal/login/", {"username": ADMIN[0], "password": ADMIN[1]}, token)

    def csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken")

    def post(self, path: str, data: dict, token: str | None = None):
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token or self.csrf()})
        return self.opener.open(f"{self.base}{path}", body.encode(), timeout=10)

    def live(self) -> dict:
        """The connected stations, as the portal's live list shows them (online filter)."""
        with self.opener.open(f"{self.base}/portal/stations.json?state=online", timeout=5) as r:
            return {s["cid"]: s for s in json.load(r)["stations"]}


def test_portal_of_one_process_sees_and_kicks_a_station_held_by_another(tmp_path):
    cid = unique_cid("CLU")
    portal_side = Gateway(tmp_path, cid, redis_url=REDIS_URL)
    holder = Gateway(tmp_path, cid, redis_url=REDIS_URL, set_up=False)
    station = Station(holder.port, cid)
    try:
        operator = PortalSession(portal_side.url)
        station.connect()
        connected = time.monotonic()
        row = wait_until(lambda: operator.live().get(cid), 2.0, f"{cid} in the other's portal")
        assert time.monotonic() - connected <= 2.0
        assert row["node"] == holder.env["OCPPGW_NODE"]

        operator.post(f"/portal/stations/{cid}/kick", {"reason": "maintenance"})
        wait_until(station.close_code, 2.0, "the holder to close the kicked socket")
        assert station.close_code() == 1000
        wait_until(lambda: cid not in operator.live(), 2.0, f"{cid} gone from the portal")
    finally:
        station.stop()
        holder.stop()
        portal_side.stop()
