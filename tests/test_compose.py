"""docker-compose.yml, Dockerfile and deploy/ agree with the code they deploy (docs/contract.md §4)."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands, load_command_class

from ocppgw import config
from stations import proxy

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
GATEWAY = SERVICES["gateway"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()
README = (ROOT / "README.md").read_text()


def _parse(argv: list[str]):
    """argv = python manage.py <command> ...: parse it with the real command's parser."""
    assert argv[:2] == ["python", "manage.py"], argv
    name = argv[2]
    assert name in get_commands(), f"{name} is no management command"
    command = load_command_class(get_commands()[name], name)
    return command.create_parser("manage.py", name).parse_args(argv[3:])


def test_every_gateway_environment_key_is_a_setting_and_documented():
    env = GATEWAY["environment"]
    assert env, "the gateway has no environment"
    for key in env:
        assert key in config.KEYS, f"{key} is not read by ocppgw/settings.py"
        assert f"`{key}`" in README, f"{key} is not in the README's settings table"


def test_every_setting_the_code_reads_is_in_the_readme():
    assert len(config.KEYS) > 50  # settings.py was read (pytest-django loads it)
    missing = sorted(key for key in config.KEYS if f"`{key}`" not in README)
    assert not missing, f"not in the README's settings: {missing}"


def test_gateway_and_migrate_commands_are_real_commands_with_real_options():
    options = _parse(GATEWAY["command"])
    assert options.processes >= 2
    assert SERVICES["migrate"]["command"][2] == "migrate"
    _parse(SERVICES["migrate"]["command"])
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1)
    _parse(yaml.safe_load(cmd))
    assert GATEWAY["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_commands_the_image_build_runs_are_real_commands():
    run = re.search(r"^RUN DJANGO_SECRET_KEY=.*?(?<!\\)$", DOCKERFILE, re.M | re.S).group(0)
    steps = [shlex.split(step) for step in run.removeprefix("RUN").replace("\\\n", " ").split("&&")]
    built = []
    for argv in steps:
        while argv and "=" in argv[0]:  # VAR=value prefixes
            argv = argv[1:]
        if argv[:2] == ["python", "manage.py"]:
            _parse(argv)
            built.append(argv[2])
    # the schema cache is filled at build and readable by the user the gateway runs as
    assert built == ["collectstatic", "compileschemas"]
    assert "/app/.cache" in run.rsplit("chown", 1)[1]


def test_ports_match_the_settings_the_proxy_and_the_image():
    env = GATEWAY["environment"]
    port, admin = env["OCPPGW_PORT"], env["OCPPGW_ADMIN_PORT"]
    assert port == "33033"  # the stations' port stays the EMQX gateway's default
    assert f"{port}:{port}" in GATEWAY["ports"]
    exposed = re.search(r"^EXPOSE (.*)$", DOCKERFILE, re.M).group(1).split()
    assert {port, admin} <= set(exposed)
    assert f"server gateway:{port};" in NGINX
    assert f"server gateway:{admin};" in NGINX
    assert not any(admin in mapping for mapping in GATEWAY["ports"]), "admin port published"


def test_gateway_kernel_limits_hold_a_big_node():
    from ocppgw.edge.serve import LISTEN_BACKLOG

    gateway = GATEWAY
    # the kernel caps the listen backlog at somaxconn: the container's must not cut it
    assert int(gateway["sysctls"]["net.core.somaxconn"]) >= LISTEN_BACKLOG
    assert int(gateway["sysctls"]["net.ipv4.tcp_max_syn_backlog"]) >= LISTEN_BACKLOG
    nofile = gateway["ulimits"]["nofile"]
    assert nofile["soft"] == nofile["hard"] >= 50_000  # OCPPGW_MAX_STATIONS derives from it


def test_images_are_pinned_to_versions():
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image or "build" in service, name
        if image:
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest" and re.match(r"\d+(\.\d+)+", tag), image
    assert re.search(r"^FROM python:3\.11\.\d+-slim", DOCKERFILE, re.M)
    assert "eclipse-mosquitto:2." in SERVICES["mosquitto"]["image"]


def test_long_running_services_have_health_checks():
    for name, service in SERVICES.items():
        if name == "migrate":
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] == "CMD", f"{name} has no health check"
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]
    assert "deploy/healthcheck.py" in GATEWAY["healthcheck"]["test"]
    assert "HEALTHCHECK" in DOCKERFILE and (ROOT / "deploy" / "healthcheck.py").is_file()


def test_image_runs_as_a_non_root_user():
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "pip install -r requirements.txt" in DOCKERFILE
    assert "collectstatic" in DOCKERFILE


def test_nginx_forwards_what_proxy_py_reads_and_is_trusted_by_address():
    for header in (
        proxy.CERT_VERIFY_HEADER,
        proxy.CERT_SUBJECT_HEADER,
        b"x-forwarded-proto",
        b"x-forwarded-for",
    ):
        assert re.search(rf"proxy_set_header {header.decode()} ", NGINX, re.I), header
    assert "X-SSL-Client-Verify $ssl_client_verify;" in NGINX
    assert "X-SSL-Client-S-DN $ssl_client_s_dn;" in NGINX
    assert "X-Forwarded-Proto https;" in NGINX
    assert "ssl_verify_client optional;" in NGINX
    assert "proxy_set_header Upgrade $http_upgrade;" in NGINX
    timeout = re.search(r"proxy_read_timeout (\d+)d;", NGINX)
    assert timeout and int(timeout.group(1)) >= 1, "stations keep sockets for days"
    address = SERVICES["proxy"]["networks"]["ocppgw"]["ipv4_address"]
    assert GATEWAY["environment"]["OCPPGW_TRUSTED_PROXIES"] == address


def test_mounted_config_files_exist():
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and "certs" not in source:
                assert (ROOT / source).exists(), source


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")
def test_nginx_config_is_valid(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    key = shlex.quote(str(certs / "server.key"))
    subprocess.run(
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=t -keyout {key} "
        f"-out {shlex.quote(str(certs / 'server.crt'))}",
        shell=True,
        check=True,
        capture_output=True,
    )
    shutil.copy(certs / "server.crt", certs / "ca.crt")
    conf = NGINX.replace("server gateway:", "server 127.0.0.1:").replace(
        "/etc/nginx/certs", str(certs)
    )
    (tmp_path / "nginx.conf").write_text(conf)
    args = ["-p", str(tmp_path), "-e", str(tmp_path / "error.log")]
    args += ["-c", str(tmp_path / "nginx.conf"), "-g", f"pid {tmp_path / 'nginx.pid'};"]
    result = subprocess.run(
        ["nginx", "-t", "-q", *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
