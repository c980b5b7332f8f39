"""Security profiles 2 and 3 through a real TLS-terminating nginx (docs/contract.md §1): no downgrade,
the client certificate's CN must be the cid, and the proxy's headers are believed only from
OCPPGW_TRUSTED_PROXIES (nginx connects upstream from 127.0.0.2, the only trusted address)."""

import datetime
import shutil
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port, port_open, wait_until
from tests.reliability.clients import Station, basic, refused_status
from tests.reliability.conftest import make_stations

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed"),
]

PASSWORD = "tls-station-password-01"


def _cert(subject_cn, issuer_key=None, issuer_name=None, *, ca=False, server=False):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(path, key, cert):
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def pki(tmp_path):
    ca_key, ca_cert = _cert("ocppgw test CA", ca=True)
    _write(tmp_path / "ca", ca_key, ca_cert)
    for name, cn, server in (("server", "127.0.0.1", True), ("p3", "tls-p3", False)):
        key, cert = _cert(cn, ca_key, ca_cert.subject, server=server)
        _write(tmp_path / name, key, cert)
    key, cert = _cert("someone-else", ca_key, ca_cert.subject)
    _write(tmp_path / "other", key, cert)
    return tmp_path


@pytest.fixture
def nginx(tmp_path, pki, request):
    def start(upstream_port: int) -> int:
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"""
user root;
worker_processes 1;
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/body;
  proxy_temp_path {tmp_path}/proxy;
  fastcgi_temp_path {tmp_path}/fastcgi;
  uwsgi_temp_path {tmp_path}/uwsgi;
  scgi_temp_path {tmp_path}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki}/server.crt;
    ssl_certificate_key {pki}/server.key;
    ssl_client_certificate {pki}/ca.crt;
    ssl_verify_client optional;
    location / {{
      proxy_pass http://127.0.0.1:{upstream_port};
      proxy_bind 127.0.0.2;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
      proxy_set_header X-SSL-Client-S-DN $ssl_client_s_dn;
    }}
  }}
}}
"""
        )
        proc = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        request.addfinalizer(lambda: (proc.terminate(), proc.wait(10)))
        wait_until(lambda: port_open(port), 10, "nginx")
        return port

    return start


def _client_ssl(pki, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
    return context


async def test_security_profiles_through_a_tls_proxy_and_no_trust_in_forged_headers(
    gateway_factory, nginx, pki
):
    gw = gateway_factory({"OCPPGW_TRUSTED_PROXIES": "127.0.0.2"}, wait_ready=False)
    db = {"DATABASE_URL": gw.env["DATABASE_URL"]}
    make_stations(db, [("tls-p1", PASSWORD, 1), ("tls-p2", PASSWORD, 2), ("tls-p3", PASSWORD, 3)])
    tls_port = nginx(gw.port)
    wss = f"wss://127.0.0.1:{tls_port}/ocpp/"
    outcomes = {}

    async def status(name, url, cid, cert=None, tls=True, headers=None):
        context = _client_ssl(pki, cert) if tls else None
        outcomes[name] = await refused_status(
            url + cid, {**basic(cid, PASSWORD), **(headers or {})}, ssl=context
        )

    plain = f"ws://127.0.0.1:{gw.port}/ocpp/"
    await status("p1 plain", plain, "tls-p1", tls=False)
    await status("p2 plain (downgrade)", plain, "tls-p2", tls=False)
    await status("p2 wss", wss, "tls-p2")
    await status("p3 wss without certificate", wss, "tls-p3")
    await status("p3 wss with its certificate", wss, "tls-p3", cert="p3")
    await status("p3 wss with another cid's certificate", wss, "tls-p3", cert="other")
    forged = {
        "X-Forwarded-Proto": "https",
        "X-SSL-Client-Verify": "SUCCESS",
        "X-SSL-Client-S-DN": "CN=tls-p3",
    }
    await status("p3 forged headers, untrusted address", plain, "tls-p3", tls=False, headers=forged)
    await status("p2 forged proto, untrusted address", plain, "tls-p2", tls=False, headers=forged)
    print("tls outcomes (None = connected):", outcomes)
    assert outcomes == {
        "p1 plain": None,
        "p2 plain (downgrade)": 403,
        "p2 wss": None,
        "p3 wss without certificate": 403,
        "p3 wss with its certificate": None,
        "p3 wss with another cid's certificate": 403,
        "p3 forged headers, untrusted address": 403,
        "p2 forged proto, untrusted address": 403,
    }
    # a station over the proxy carries traffic end to end
    station = await Station(
        wss + "tls-p3", "tls-p3", headers=basic("tls-p3", PASSWORD), ssl=_client_ssl(pki, "p3")
    ).open()
    assert await station.send([2, "t1", "VendorPing", {}])
    await station.close()
