"""Provision many stations at once from a CSV or JSON file (all or nothing)."""

import csv
import io
import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from stations import identity, services
from stations.models import Station

FIELDS = ("cid", "password", "enabled", "security_profile", "validation_policy")
_TRUE, _FALSE = {"true", "1", "yes", ""}, {"false", "0", "no"}


def read_rows(path: Path) -> list[dict]:
    """Rows of a .json file (a list of objects) or a CSV file with a header line."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        rows = json.loads(text)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("a JSON import is a list of objects")
        return rows
    return list(csv.DictReader(io.StringIO(text)))


def station_fields(row: dict) -> dict:
    """The Station fields of one row, checked; ValueError says what is wrong."""
    unknown = set(row) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(sorted(unknown))}")
    fields = {}
    enabled = row.get("enabled", True)
    if isinstance(enabled, str):
        if enabled.strip().lower() not in _TRUE | _FALSE:
            raise ValueError(f"enabled: expected true or false, got {enabled!r}")
        enabled = enabled.strip().lower() in _TRUE
    fields["enabled"] = bool(enabled)
    profile = str(row.get("security_profile") or 1).strip()
    if profile not in ("1", "2", "3"):
        raise ValueError(f"security_profile: expected 1, 2 or 3, got {profile!r}")
    fields["security_profile"] = int(profile)
    policy = (row.get("validation_policy") or "").strip()
    if policy not in dict(Station.POLICIES):
        raise ValueError(
            f"validation_policy: expected strict, lenient, log or empty, got {policy!r}"
        )
    fields["validation_policy"] = policy
    return fields


class Command(BaseCommand):
    help = (
        "Create stations from a CSV (header: cid,password,enabled,security_profile,"
        "validation_policy; only cid required) or JSON file ('-' = stdin). Every row is checked "
        "first; nothing is created if one is wrong. Prints cid,password for each created station "
        "(generated where the file has none): the only time they are shown."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--update",
            action="store_true",
            help="stations that exist get the file's fields (and password, if given)",
        )
        parser.add_argument("--dry-run", action="store_true", help="check the file, change nothing")

    def handle(self, *args, file, update, dry_run, **options):
        try:
            rows = read_rows(file)
        except (OSError, ValueError) as exc:
            raise CommandError(f"{file}: {exc}") from exc
        plan, problems, seen = [], [], set()
        existing = set(Station.objects.values_list("cid_key", flat=True))
        for line, row in enumerate(rows, start=2):  # line 1 is the CSV header
            cid = str(row.get("cid") or "").strip()
            password = str(row.get("password") or "")
            problem = identity.validate(cid) if cid else "cid is empty"
            try:
                fields = station_fields(row)
            except ValueError as exc:
                problem = problem or str(exc)
            if not problem and password:
                problem = services.password_problem(password)
            key = identity.key(cid)
            if not problem and key in seen:
                problem = f"{cid} appears twice"
            if not problem and key in existing and not update:
                problem = f"station {cid} exists (use --update)"
            seen.add(key)
            if problem:
                problems.append(f"row {line}: {problem}")
            else:
                plan.append((cid, password, fields, key in existing))
        if problems:
            raise CommandError(
                f"nothing imported, {len(problems)} bad row(s):\n" + "\n".join(problems)
            )
        if dry_run:
            new = sum(1 for *_, exists in plan if not exists)
            self.stderr.write(f"{len(plan)} rows are fine: {new} new, {len(plan) - new} to update")
            return
        created = []
        with transaction.atomic():
            for cid, password, fields, exists in plan:
                if exists:
                    station = Station.objects.get(cid_key=identity.key(cid))
                    for name, value in fields.items():
                        setattr(station, name, value)
                    station.save()
                    if password:
                        services.set_password(station, password)
                    continue
                try:
                    station, password = services.create_station(cid, password, **fields)
                except (services.StationRefused, services.PasswordRefused) as exc:
                    raise CommandError(f"{cid}: {exc}; nothing imported") from exc
                created.append([station.cid, password])
        out = csv.writer(self.stdout)  # after the commit: a rolled-back password is never shown
        out.writerows([["cid", "password"], *created])
        self.stderr.write(f"imported {len(plan)} station(s): {len(created)} new")
