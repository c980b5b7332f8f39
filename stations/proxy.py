"""What a TLS-terminating proxy tells us about a connection, believed only from trusted proxies.

Daphne cannot ask for client certificates, so security profiles 2 and 3 terminate TLS at a proxy
(nginx, HAProxy) that passes `X-Forwarded-Proto` and the verified client certificate's subject.
Pure: works on the ASGI scope's client address and headers.
"""

import ipaddress
import re
from functools import lru_cache

CERT_SUBJECT_HEADER = b"x-ssl-client-s-dn"
CERT_VERIFY_HEADER = b"x-ssl-client-verify"
_CN = re.compile(r"(?:^|[,/])\s*CN\s*=\s*([^,/]+)")


@lru_cache(maxsize=64)
def _networks(trusted: tuple[str, ...]):
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def is_trusted(address: str | None, trusted: tuple[str, ...]) -> bool:
    if not address or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _networks(trusted))


def transport(client_ip: str | None, headers: dict[bytes, bytes], trusted: tuple[str, ...]):
    """(tls, verified certificate subject or None, real client address) for a connection."""
    if not is_trusted(client_ip, trusted):
        return False, None, client_ip
    tls = headers.get(b"x-forwarded-proto", b"").lower() in (b"https", b"wss")
    forwarded_for = headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",")[0].strip()
    subject = None
    if tls and headers.get(CERT_VERIFY_HEADER, b"") == b"SUCCESS":
        subject = headers.get(CERT_SUBJECT_HEADER, b"").decode("latin-1") or None
    return tls, subject, forwarded_for or client_ip


def subject_matches(subject: str | None, cid_key: str) -> bool:
    """Profile 3: the certificate's CN (or whole subject) must be the charge point id."""
    if not subject:
        return False
    match = _CN.search(subject)
    name = match.group(1).strip() if match else subject.strip()
    return name.lower() == cid_key


def profile_refusal(profile: int, tls: bool, subject: str | None, cid_key: str) -> str | None:
    """Why a station set to `profile` may not connect this way, or None (no downgrade)."""
    if profile >= 2 and not tls:
        return f"security profile {profile} requires TLS"
    if profile >= 3 and not subject_matches(subject, cid_key):
        return "security profile 3 requires a client certificate for this charge point id"
    return None
