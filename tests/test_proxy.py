"""TLS proxy headers: believed only from trusted proxies; security profile refusals."""

import pytest

from stations import proxy

TRUSTED = ("10.0.0.0/8", "192.168.1.5")
TLS_HEADERS = {
    b"x-forwarded-proto": b"https",
    b"x-forwarded-for": b"203.0.113.7, 10.0.0.2",
    b"x-ssl-client-verify": b"SUCCESS",
    b"x-ssl-client-s-dn": b"CN=CP001,O=Example",
}


@pytest.mark.parametrize(
    ("client_ip", "trusted", "expected"),
    [
        ("10.1.2.3", TRUSTED, (True, "CN=CP001,O=Example", "203.0.113.7")),
        ("192.168.1.5", TRUSTED, (True, "CN=CP001,O=Example", "203.0.113.7")),
        # untrusted peers cannot claim TLS, a certificate or another address
        ("192.168.1.6", TRUSTED, (False, None, "192.168.1.6")),
        ("203.0.113.9", TRUSTED, (False, None, "203.0.113.9")),
        ("10.1.2.3", (), (False, None, "10.1.2.3")),
        (None, TRUSTED, (False, None, None)),
        ("not-an-ip", TRUSTED, (False, None, "not-an-ip")),
    ],
)
def test_forwarded_headers_count_only_from_trusted_proxies(client_ip, trusted, expected):
    assert proxy.transport(client_ip, TLS_HEADERS, trusted) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({b"x-forwarded-proto": b"wss"}, (True, None, "10.0.0.1")),
        ({b"x-forwarded-proto": b"http"}, (False, None, "10.0.0.1")),
        ({}, (False, None, "10.0.0.1")),
        # a subject counts only over TLS and only when the proxy verified the certificate
        ({**TLS_HEADERS, b"x-ssl-client-verify": b"FAILED:expired"}, (True, None, "203.0.113.7")),
        ({**TLS_HEADERS, b"x-forwarded-proto": b"http"}, (False, None, "203.0.113.7")),
        ({**TLS_HEADERS, b"x-ssl-client-s-dn": b""}, (True, None, "203.0.113.7")),
    ],
)
def test_tls_and_subject_from_a_trusted_proxy(headers, expected):
    assert proxy.transport("10.0.0.1", headers, TRUSTED) == expected


def test_ipv6_proxies():
    assert proxy.is_trusted("::1", ("::1",))
    assert proxy.is_trusted("fd00::5", ("fd00::/8",))
    assert not proxy.is_trusted("fe80::1", ("fd00::/8",))


@pytest.mark.parametrize(
    ("subject", "matches"),
    [
        ("CN=CP001,O=Example", True),
        ("O=Example,CN=cp001", True),  # case-insensitive, as cids are
        ("/C=DE/O=Example/CN=CP001", True),  # OpenSSL's oneline form
        ("CN = CP001 , O=x", True),
        ("CP001", True),  # a bare name
        ("CN=CP0011,O=Example", False),
        ("CN=CP002", False),
        ("O=CP001", False),
        ("", False),
        (None, False),
    ],
)
def test_client_certificate_subject_must_name_the_cid(subject, matches):
    assert proxy.subject_matches(subject, "cp001") is matches


@pytest.mark.parametrize(
    ("profile", "tls", "subject", "refused"),
    [
        (1, False, None, None),
        (1, True, "CN=CP001", None),  # a higher profile than required is fine
        (2, False, None, "security profile 2 requires TLS"),
        (2, True, None, None),
        (3, False, "CN=CP001", "security profile 3 requires TLS"),
        (3, True, None, "client certificate"),
        (3, True, "CN=OTHER", "client certificate"),
        (3, True, "CN=CP001", None),
    ],
)
def test_profile_refusal(profile, tls, subject, refused):
    reason = proxy.profile_refusal(profile, tls, subject, "cp001")
    if refused is None:
        assert reason is None
    else:
        assert refused in reason
