"""Which OCPP version a station gets from the subprotocols it offers (docs/contract.md §1). Pure.

Matching is exact by default (OCPP-J names them `ocpp1.6`, `ocpp2.0.1`, `ocpp2.1`);
`OCPPGW_SUBPROTOCOL_ALIASES` maps other spellings real fleets send (`ocpp1.6j=ocpp1.6`). The
handshake echoes the name the station offered, as RFC 6455 requires of the server's choice.
"""

NAMES = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")


def parse_aliases(text: str) -> dict[str, str]:
    """`alias=name,alias=name` -> {alias: name}; ValueError names the bad entry."""
    aliases = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        alias, sep, name = (x.strip() for x in item.partition("="))
        if not sep or not alias or name not in NAMES:
            raise ValueError(f"{item!r}: expected alias=one of {', '.join(NAMES)}")
        aliases[alias] = name
    return aliases


def pick(offered, enabled, aliases: dict[str, str], default: str):
    """(version, subprotocol to echo or None, None) or (None, None, why the station is refused)."""
    for name in offered:  # the station's order of preference
        canonical = aliases.get(name, name)
        if canonical in enabled:
            return canonical.removeprefix("ocpp"), name, None
    if not offered and default:
        return default.removeprefix("ocpp"), None, None
    shown = ", ".join(offered)[:80] or "none"
    return None, None, f"no acceptable OCPP subprotocol offered (offered: {shown})"
