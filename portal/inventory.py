"""The station inventory: every station, filtered, searched, sorted and paged (portal list and
its live JSON share it). Offset pages over indexed columns: 10,000 stations answer in
milliseconds, and each page costs a fixed number of queries."""

import dataclasses

from django.db.models import Count, F, Q

from stations import identity
from stations.models import Station

PAGE_SIZE = 50
STATES = ("all", "online", "offline")
# sort key -> ORDER BY; cid_key breaks ties so pages never overlap
SORTS = {
    "cid": [F("cid_key").asc()],
    "last_seen": [F("last_frame_at").desc(nulls_last=True), F("cid_key").asc()],
    "version": [F("ocpp_version").asc(), F("cid_key").asc()],
    "node": [F("node").asc(), F("cid_key").asc()],
    "vendor": [F("vendor").asc(), F("model").asc(), F("cid_key").asc()],
}
FIELDS = (
    "cid", "enabled", "connection_id", "ocpp_version", "node", "connected_at", "last_frame_at",
    "disconnected_at", "frames_in", "frames_out", "vendor", "model",
)  # fmt: skip


@dataclasses.dataclass
class Query:
    state: str = "all"
    search: str = ""
    sort: str = "cid"
    page: int = 1

    @classmethod
    def from_params(cls, params) -> "Query":
        """Read ?state=&q=&sort=&page=, falling back to defaults for anything unknown."""
        state = params.get("state", "all")
        sort = params.get("sort", "cid")
        try:
            page = max(1, int(params.get("page", 1)))
        except ValueError:
            page = 1
        return cls(
            state if state in STATES else "all",
            params.get("q", "").strip()[:48],
            sort if sort in SORTS else "cid",
            page,
        )

    def params(self, **changes) -> str:
        """The query string of this view with `changes` (for links: sort, filter, page)."""
        values = {**dataclasses.asdict(self), **changes}
        shown = {
            "state": values["state"] if values["state"] != "all" else "",
            "q": values["search"],
            "sort": values["sort"] if values["sort"] != "cid" else "",
            "page": values["page"] if values["page"] != 1 else "",
        }
        from urllib.parse import urlencode

        return "?" + urlencode({k: v for k, v in shown.items() if v})


@dataclasses.dataclass
class Page:
    rows: list[dict]
    matching: int  # stations matching state and search
    counts: dict  # {"all": n, "online": n, "offline": n}, of the whole fleet
    query: Query

    @property
    def pages(self) -> int:
        return max(1, -(-self.matching // PAGE_SIZE))


def page(query: Query) -> Page:
    """One page of the inventory in three queries (rows, matching count, fleet counts)."""
    qs = Station.objects.all()
    if query.state == "online":
        qs = qs.exclude(connection_id="")
    elif query.state == "offline":
        qs = qs.filter(connection_id="")
    if query.search:
        qs = qs.filter(cid_key__contains=identity.key(query.search))
    start = (query.page - 1) * PAGE_SIZE
    rows = list(qs.order_by(*SORTS[query.sort]).values(*FIELDS)[start : start + PAGE_SIZE])
    for row in rows:
        row["online"] = bool(row.pop("connection_id"))
    fleet = Station.objects.aggregate(
        all=Count("id"), online=Count("id", filter=~Q(connection_id=""))
    )
    counts = {**fleet, "offline": fleet["all"] - fleet["online"]}
    matching = counts[query.state] if not query.search else qs.count()
    return Page(rows, matching, counts, query)
