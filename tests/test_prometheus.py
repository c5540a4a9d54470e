"""The Prometheus exporter, scraped over real HTTP."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

import snakepit

prometheus = pytest.importorskip("snakepit.telemetry.prometheus")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_exporter_serves_pool_gauges_and_request_metrics(wait_until):
    pool = snakepit.start_pool("prom", profile="thread", pool_size=1, threads_per_worker=4, history_interval=None)
    exporter = prometheus.start_exporter(port=0)
    try:
        assert exporter.port > 0 and exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
        for i in range(3):
            pool.execute("echo", {"i": i})
        with pytest.raises(snakepit.RemoteError):
            pool.execute("no_such_command")
        held = [pool.submit_command("sleep", {"seconds": 30}) for _ in range(3)]
        assert wait_until(lambda: sum(w.load for w in pool.list_workers()) == 3, 20.0)

        m = _scrape(exporter.url)
        labels = (("pool", "prom"), ("profile", "thread"))
        assert m[("snakepit_pool_workers", labels)] == 1
        assert m[("snakepit_pool_capacity", labels)] == 4
        assert m[("snakepit_pool_load", labels)] == 3
        assert m[("snakepit_pool_utilization_ratio", labels)] == pytest.approx(0.75)
        assert m[("snakepit_pool_queue_depth", labels)] == 0
        (worker,) = pool.list_workers()
        wl = (("pool", "prom"), ("profile", "thread"), ("worker_id", worker.worker_id))
        assert m[("snakepit_worker_memory_bytes", wl)] > 5 * 2**20  # the worker's real RSS
        assert m[("snakepit_worker_load", wl)] == 3

        echo = (("command", "echo"), ("pool", "prom"), ("success", "true"))
        assert m[("snakepit_requests_total", echo)] == 3
        failed = (("command", "no_such_command"), ("pool", "prom"), ("success", "false"))
        assert m[("snakepit_requests_total", failed)] == 1
        hist = (("command", "echo"), ("pool", "prom"))
        assert m[("snakepit_request_duration_seconds_count", hist)] == 3
        assert m[("snakepit_request_duration_seconds_sum", hist)] > 0
        for fut in held:
            fut.cancel()
    finally:
        exporter.stop()
        snakepit.shutdown()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(exporter.url, timeout=2)


def test_saturation_and_worker_events_are_counted(wait_until):
    exporter = prometheus.start_exporter(pools=["tiny"])
    try:
        pool = snakepit.start_pool("tiny", pool_size=1, max_queue_size=0, history_interval=None)
        busy = pool.submit_command("sleep", {"seconds": 30})
        assert wait_until(lambda: sum(w.load for w in pool.list_workers()) == 1, 20.0)
        with pytest.raises(snakepit.PoolSaturatedError):
            pool.execute("ping")
        m = _scrape(exporter.url)
        assert m[("snakepit_pool_saturated_total", (("pool", "tiny"),))] == 1
        assert m[("snakepit_worker_started_total", (("pool", "tiny"),))] == 1
        assert m[("snakepit_worker_startup_seconds_count", (("pool", "tiny"),))] == 1
        busy.cancel()
    finally:
        exporter.stop()
        snakepit.shutdown()


def test_exporter_listens_on_loopback_by_default_and_refuses_host_names():
    with pytest.raises(ValueError, match="IP address"):
        prometheus.start_exporter(addr=socket.gethostname())
    with prometheus.start_exporter() as exporter:
        assert exporter.addr == "127.0.0.1"
        assert _scrape(exporter.url) is not None  # no pools: still a valid exposition
        listening = [c for c in __import__("psutil").Process().net_connections("inet")
                     if c.status == "LISTEN" and c.laddr.port == exporter.port]
        assert [c.laddr.ip for c in listening] == ["127.0.0.1"]


def test_an_explicit_non_loopback_address_is_allowed_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="snakepit.telemetry.prometheus"):
        with prometheus.start_exporter(addr="0.0.0.0") as exporter:
            assert exporter.addr == "0.0.0.0"
            assert _scrape(f"http://127.0.0.1:{exporter.port}/metrics") is not None
    assert "without TLS or authentication" in caplog.text


def _self_signed(tmp_path, name: str = "server"):
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    import datetime

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _scrape_tls(url: str, cafile: str, client: tuple[str, str] | None = None, headers=None):
    import ssl

    context = ssl.create_default_context(cafile=cafile)
    if client is not None:
        context.load_cert_chain(*client)
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return response.status, response.read().decode()


def test_tls_exporter_serves_https_only(tmp_path):
    cert, key = _self_signed(tmp_path)
    pool = snakepit.start_pool("prom-tls", pool_size=1, history_interval=None)
    try:
        with prometheus.start_exporter(pools=["prom-tls"], certfile=cert, keyfile=key) as exporter:
            assert exporter.url.startswith("https://127.0.0.1:")
            status, text = _scrape_tls(exporter.url, cafile=cert)
            assert status == 200 and 'snakepit_pool_workers{pool="prom-tls"' in text
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                urllib.request.urlopen(exporter.url.replace("https://", "http://"), timeout=5).read()
            assert pool.execute("ping", {})["pong"]  # a refused plaintext scrape changed nothing
            assert _scrape_tls(exporter.url, cafile=cert)[0] == 200
    finally:
        snakepit.stop_pool("prom-tls")


def test_tls_exporter_can_require_client_certificates(tmp_path):
    cert, key = _self_signed(tmp_path)
    client_cert, client_key = _self_signed(tmp_path, "scraper")
    with prometheus.start_exporter(certfile=cert, keyfile=key, client_cafile=client_cert,
                                   client_auth_required=True) as exporter:
        assert _scrape_tls(exporter.url, cafile=cert, client=(client_cert, client_key))[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            _scrape_tls(exporter.url, cafile=cert)  # no client certificate


def test_basic_auth_refuses_scrapes_without_the_password():
    import base64

    with prometheus.start_exporter(basic_auth=("prom", "s3cret")) as exporter:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(exporter.url, timeout=5)
        assert refused.value.code == 401
        wrong = urllib.request.Request(exporter.url, headers={
            "Authorization": "Basic " + base64.b64encode(b"prom:nope").decode()})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=5)
        assert refused.value.code == 401
        right = urllib.request.Request(exporter.url, headers={
            "Authorization": "Basic " + base64.b64encode(b"prom:s3cret").decode()})
        with urllib.request.urlopen(right, timeout=5) as response:
            assert response.status == 200
            assert b"snakepit_requests_total" in response.read()


@pytest.mark.parametrize("kwargs, message", [
    ({"certfile": "x.crt"}, "both certfile and keyfile"),
    ({"client_auth_required": True}, "need TLS"),
    ({"basic_auth": ("user",)}, "basic_auth"),
    ({"basic_auth": ("a:b", "pw")}, "':'"),
])
def test_bad_exporter_settings_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prometheus.start_exporter(**kwargs)


def test_two_exporters_do_not_collide():
    with prometheus.start_exporter() as a, prometheus.start_exporter() as b:
        assert a.port != b.port
        assert _scrape(a.url) is not None and _scrape(b.url) is not None
