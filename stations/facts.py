"""What a station says about itself, read from the CALLs the gateway forwards anyway. Pure.

BootNotification gives vendor, model, serial number and firmware (1.6 flat, 2.0.1/2.1 under
`chargingStation`); StatusNotification the state of a connector (1.6: `connectorId`, `status`,
`errorCode`; 2.0.1/2.1: `evseId`/`connectorId`, `connectorStatus`); Heartbeat that the station
is alive. The gateway stores them for the portal through its batched writer (msglog.py), never
on the frame path, and decides nothing with them.
"""

ACTIONS = frozenset(("BootNotification", "StatusNotification", "Heartbeat"))
MAX_CONNECTORS = 64  # a station cannot grow its row without bound by inventing connector ids


def _text(value, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def boot(version: str, payload: dict) -> dict:
    """The identity a BootNotification carries, as Station fields."""
    if version == "1.6":
        serial = payload.get("chargePointSerialNumber") or payload.get("chargeBoxSerialNumber")
        return {
            "vendor": _text(payload.get("chargePointVendor"), 50),
            "model": _text(payload.get("chargePointModel"), 50),
            "serial_number": _text(serial, 50),
            "firmware_version": _text(payload.get("firmwareVersion"), 50),
        }
    station = payload.get("chargingStation")
    station = station if isinstance(station, dict) else {}
    return {
        "vendor": _text(station.get("vendorName"), 50),
        "model": _text(station.get("model"), 50),
        "serial_number": _text(station.get("serialNumber"), 50),
        "firmware_version": _text(station.get("firmwareVersion"), 50),
    }


def connector(version: str, payload: dict) -> tuple[str, dict] | None:
    """(connector key, its state) from a StatusNotification; key "2" (1.6) or "1/2" (EVSE 1)."""
    if version == "1.6":
        number = payload.get("connectorId")
        if not isinstance(number, int):
            return None
        return str(number), {
            "status": _text(payload.get("status"), 40),
            "error_code": _text(payload.get("errorCode"), 40),
            "info": _text(payload.get("info"), 50),
        }
    evse, number = payload.get("evseId"), payload.get("connectorId")
    if not isinstance(evse, int) or not isinstance(number, int):
        return None
    return f"{evse}/{number}", {"status": _text(payload.get("connectorStatus"), 40)}


def merge(connectors: dict, updates: dict) -> dict:
    """Stored connectors with newer states applied (new ids beyond MAX_CONNECTORS are ignored)."""
    merged = dict(connectors or {})
    for key, state in updates.items():
        if key in merged or len(merged) < MAX_CONNECTORS:
            merged[key] = state
    return dict(sorted(merged.items(), key=lambda item: [int(p) for p in item[0].split("/")]))
