"""Station password rotation through OCPP (docs/contract.md §1): find the secret, see it accepted, redact.

1.6 sets it with ChangeConfiguration key AuthorizationKey; 2.0.1 and 2.1 with SetVariables
SecurityCtrlr.BasicAuthPassword. Pure: the session stores the new hash once the station accepts.
"""

import copy

REDACTED = "***"


def _is_basic_auth_entry(entry) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("component"), dict)
        and isinstance(entry.get("variable"), dict)
        and entry["component"].get("name") == "SecurityCtrlr"
        and entry["variable"].get("name") == "BasicAuthPassword"
    )


def secret_in(version: str, action: str, payload) -> str | None:
    """The new station password a backend CALL sets, or None."""
    if not isinstance(payload, dict):
        return None
    if version == "1.6" and action == "ChangeConfiguration":
        if payload.get("key") == "AuthorizationKey" and isinstance(payload.get("value"), str):
            return payload["value"]
    elif version != "1.6" and action == "SetVariables":
        for entry in payload.get("setVariableData") or []:
            if _is_basic_auth_entry(entry) and isinstance(entry.get("attributeValue"), str):
                return entry["attributeValue"]
    return None


def accepted(version: str, result) -> bool:
    """True when the station's CALLRESULT accepts the new password."""
    if not isinstance(result, dict):
        return False
    if version == "1.6":
        return result.get("status") == "Accepted"
    return any(
        _is_basic_auth_entry(entry) and entry.get("attributeStatus") == "Accepted"
        for entry in result.get("setVariableResult") or []
    )


def redact(version: str, action: str, payload: dict) -> dict:
    """A copy of the CALL payload with the secret replaced, for the message log."""
    clean = copy.deepcopy(payload)
    if version == "1.6":
        clean["value"] = REDACTED
    else:
        for entry in clean.get("setVariableData") or []:
            if _is_basic_auth_entry(entry):
                entry["attributeValue"] = REDACTED
    return clean
