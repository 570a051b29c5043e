"""The one URL fetcher: the address policy both ways, DNS answers checked as connected, a total deadline."""
from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from data_factory import encoded_image
from httpkit import QuietHandler

from deepsift.exceptions import ImageFetchError, ImageTooLargeError, URLNotAllowedError, UsageError
from deepsift.urlfetch import (STRICT_POLICY, USER_POLICY, FetchPolicy, address_allowed, address_kind, check_url,
                               fetch_url)

JPEG = encoded_image(1, (32, 24))


class Handler(QuietHandler):
    def do_GET(self):  # noqa: N802
        srv = self.server
        parts = urlsplit(self.path)
        with srv.lock:
            srv.hits[parts.path] += 1
        query = parse_qs(parts.query)
        try:
            if parts.path == "/a.jpg":
                self._send(200, JPEG)
            elif parts.path == "/redirect":
                self._send(302, headers=[("Location", query["to"][0])])
            elif parts.path == "/loop":
                self._send(302, headers=[("Location", "/loop")])
            elif parts.path == "/page":
                self._send(200, b"<html>not a picture</html>", "text/html")
            elif parts.path == "/big":
                self._send(200, JPEG + b"\0" * 5000)
            elif parts.path == "/drip.jpg":  # one byte at a time, for far longer than any deadline
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "400")
                self.end_headers()
                for _ in range(400):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    if srv.release.wait(0.25):
                        return
            elif parts.path == "/slow-headers.jpg":  # nothing at all until released
                srv.release.wait(120)
                self._send(200, JPEG)
            else:
                self._send(404, b"no", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass


def serve(host="127.0.0.1", port=0):
    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    srv.hits, srv.lock, srv.release = Counter(), threading.Lock(), threading.Event()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv.base = f"http://{host}:{srv.server_address[1]}"
    return srv


@pytest.fixture
def servers():
    """Two servers on one port: 127.0.0.1 (the 'allowed' one in strict tests) and 127.0.0.2 (never to be reached)."""
    one = serve("127.0.0.1")
    try:
        two = serve("127.0.0.2", one.server_address[1])
    except OSError:
        two = serve("127.0.0.2")
    yield one, two
    for s in (one, two):
        s.release.set()
        s.shutdown()
        s.server_close()


ONLY_ONE = FetchPolicy(allow_networks=("127.0.0.1/32",))
"""The strict checks, with one exception so that a test server can stand in for the public internet."""


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.9", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"), ("100.64.0.1", "non-public"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("198.51.100.7", "private"), ("240.0.0.1", "private"), ("::1", "loopback"),
    ("fe80::1", "link-local"), ("fc00::1", "private"), ("::ffff:127.0.0.1", "loopback (inside ::ffff:7f00:1)"),
    ("2002:7f00:1::", "loopback (inside 2002:7f00:1::)"), ("64:ff9b::a00:1", "private (inside 64:ff9b::a00:1)"),
])
def test_non_public_addresses_are_refused_by_the_strict_policy(address, kind):
    assert address_kind(address) == kind
    assert not address_allowed(address, STRICT_POLICY)
    assert address_allowed(address, USER_POLICY)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_kind(address) is None and address_allowed(address, STRICT_POLICY)


def test_policy_settings_are_checked():
    with pytest.raises(UsageError):
        FetchPolicy(max_redirects=-1)
    with pytest.raises(UsageError):
        FetchPolicy(allow_networks=("not a network",))
    assert ONLY_ONE.allows("127.0.0.1") and not ONLY_ONE.allows("127.0.0.2")


def test_strict_policy_refuses_loopback_in_every_spelling_and_connects_nowhere(servers):
    one, _ = servers
    port = one.server_address[1]
    for url in (f"{one.base}/a.jpg", f"http://localhost:{port}/a.jpg", f"http://2130706433:{port}/a.jpg",
                f"http://0x7f.1:{port}/a.jpg", f"http://[::ffff:127.0.0.1]:{port}/a.jpg"):
        with pytest.raises(URLNotAllowedError, match="refused by the URL policy") as info:
            fetch_url(url)  # the default policy is the strict one
        assert url in str(info.value) and "loopback" in str(info.value)
    assert one.hits == Counter()  # not one request reached the server


def test_the_user_policy_fetches_from_loopback(servers):
    one, _ = servers
    assert fetch_url(f"{one.base}/a.jpg", policy=USER_POLICY) == JPEG
    assert fetch_url(f"http://localhost:{one.server_address[1]}/a.jpg", policy=USER_POLICY) == JPEG


def test_every_redirect_target_is_checked(servers):
    one, two = servers
    assert fetch_url(f"{one.base}/redirect?to=/a.jpg", policy=ONLY_ONE) == JPEG  # the strict path does work
    for target in (f"{two.base}/a.jpg", f"http://[::1]:{two.server_address[1]}/a.jpg", "http://10.0.0.1/a.jpg"):
        with pytest.raises(URLNotAllowedError, match="refused by the URL policy"):
            fetch_url(f"{one.base}/redirect?to={target}", policy=ONLY_ONE)
    with pytest.raises(ImageFetchError, match="only http"):
        fetch_url(f"{one.base}/redirect?to=file:///etc/passwd", policy=USER_POLICY)
    assert two.hits == Counter()
    # the user's policy follows the same redirect
    assert fetch_url(f"{one.base}/redirect?to={two.base}/a.jpg", policy=USER_POLICY) == JPEG


def test_dns_answers_are_checked_as_connected_so_rebinding_cannot_slip_through(servers):
    one, two = servers
    port = one.server_address[1] if two.server_address[1] == one.server_address[1] else None
    if port is None:
        pytest.skip("could not serve 127.0.0.1 and 127.0.0.2 on one port")
    answers = iter([["127.0.0.1"], ["127.0.0.2"], ["127.0.0.1", "127.0.0.2"]])  # a name that changes its answer
    calls = []

    def resolver(host, p):
        calls.append(host)
        return next(answers)

    policy = FetchPolicy(allow_networks=("127.0.0.1/32",), resolver=resolver)
    url = f"http://images.example:{port}/a.jpg"
    assert fetch_url(url, policy=policy) == JPEG  # the first answer is allowed, and is where it connected
    assert one.hits["/a.jpg"] == 1
    with pytest.raises(URLNotAllowedError, match="images.example resolves to 127.0.0.2, a loopback address"):
        fetch_url(url, policy=policy)  # rebound: refused, nothing sent
    with pytest.raises(URLNotAllowedError, match="127.0.0.2"):
        fetch_url(url, policy=policy)  # any forbidden answer refuses the name as a whole
    assert calls == ["images.example"] * 3  # one lookup per connection: the checked answer is the one used
    assert two.hits == Counter() and one.hits["/a.jpg"] == 1


def test_strict_policy_ignores_proxies_from_the_environment(servers, monkeypatch):
    one, _ = servers
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch_url(f"{one.base}/a.jpg", policy=ONLY_ONE) == JPEG


@pytest.mark.parametrize("path", ["/drip.jpg", "/slow-headers.jpg"])
def test_the_deadline_is_total_not_per_read(servers, path):
    """One byte every 0.25 s for 100 s (or no headers at all): the fetch ends at its 1.5 s deadline."""
    one, _ = servers
    start = time.monotonic()
    with pytest.raises(ImageFetchError, match=r"timed out after 1.5 s"):
        fetch_url(f"{one.base}{path}", policy=USER_POLICY, deadline=1.5)
    assert time.monotonic() - start < 30  # far below the 100 s the server would keep it busy


def test_a_hanging_resolver_does_not_outlive_the_deadline():
    gate = threading.Event()

    def resolver(host, port):
        gate.wait(60)
        return ["93.184.216.34"]

    start = time.monotonic()
    try:
        with pytest.raises(ImageFetchError, match="timed out"):
            fetch_url("http://slow-dns.example/a.jpg", policy=FetchPolicy(resolver=resolver), deadline=1.0)
        assert time.monotonic() - start < 30
    finally:
        gate.set()


def test_errors_name_the_url_and_the_reason(servers):
    one, _ = servers
    cases = {"/page": "returned text/html, not an image", "/missing.jpg": "HTTP 404",
             "/loop": "too many redirects"}
    for path, words in cases.items():
        with pytest.raises(ImageFetchError, match=words) as info:
            fetch_url(f"{one.base}{path}", policy=USER_POLICY)
        assert f"{one.base}{path}" in str(info.value)
    with pytest.raises(ImageTooLargeError, match="cap of 1000 bytes"):
        fetch_url(f"{one.base}/big", policy=USER_POLICY, max_bytes=1000)
    for url in ("ftp://example.com/a.jpg", "file:///etc/passwd", "http:///nohost"):
        with pytest.raises(ImageFetchError, match="only http"):
            check_url(url)
    with pytest.raises(UsageError):
        fetch_url(f"{one.base}/a.jpg", policy=USER_POLICY, deadline=0)


def test_detect_honours_the_url_deadline_and_the_policy(servers, code_model_dir):
    from deepsift.model.detector import Detector

    one, _ = servers
    strict = Detector.load_backbone_only(str(code_model_dir), url_timeout=1.5)
    (src, emb, err), = strict.embed_iter([f"{one.base}/a.jpg"])
    assert emb is None and "refused by the URL policy" in err  # a library Detector is strict by default
    user = Detector.load_backbone_only(str(code_model_dir), url_timeout=1.5, url_policy=USER_POLICY)
    start = time.monotonic()
    rows = list(user.embed_iter([f"{one.base}/drip.jpg", f"{one.base}/a.jpg"]))
    assert time.monotonic() - start < 30
    assert "timed out after 1.5 s" in rows[0][2] and rows[1][2] is None and rows[1][1] is not None


def test_detect_url_timeout_is_a_total_deadline_on_the_command_line(servers, code_model_dir, tmp_path, capsys):
    """``--url-timeout 1.5`` against a server dripping one byte every 0.25 s for 100 s."""
    import json

    import numpy as np

    from deepsift.cli import main
    from deepsift.model.headset import save_headset
    from deepsift.model.heads import make_head

    one, _ = servers
    rng = np.random.default_rng(0)
    save_headset({"linear": make_head("linear").fit(rng.normal(size=(20, 192)), np.r_[np.zeros(10), np.ones(10)])},
                 tmp_path / "heads")
    start = time.monotonic()
    rc = main(["detect", f"{one.base}/drip.jpg", f"{one.base}/a.jpg", "--url-timeout", "1.5", "--model",
               str(code_model_dir), "--heads", str(tmp_path / "heads"), "--format", "jsonl", "--out",
               str(tmp_path / "out.jsonl")])
    assert time.monotonic() - start < 60
    assert rc == 3  # done, one input failed; the CLI's user policy fetched from 127.0.0.1
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert "timed out after 1.5 s" in rows[0]["error"] and rows[1]["error"] is None


def test_baselines_are_strict_by_default_and_the_command_line_uses_the_user_policy(servers, tmp_path, capsys):
    """A baseline fetches URLs through the same fetcher: strict from the API (a server), user policy from the CLI."""
    import json

    from deepsift.cli import main
    from deepsift.evaluate.baselines import get_baseline, load_baseline
    from deepsift.evaluate.baselines.synthetic import write_synthetic_folders

    real, fake = write_synthetic_folders(tmp_path / "train", 6, 6, seed=0)
    get_baseline("frequency", crop_size=16).fit(sorted(real.iterdir()), sorted(fake.iterdir())).save(tmp_path / "f")
    one, _ = servers
    url = f"{one.base}/a.jpg"
    (strict,) = load_baseline(tmp_path / "f").predict([url])
    assert strict.probability is None and "refused by the URL policy" in strict.error
    assert one.hits["/a.jpg"] == 0  # refused before connecting
    (user,) = load_baseline(tmp_path / "f", url_policy=USER_POLICY).predict([url])
    assert user.error is None and 0.0 <= user.probability <= 1.0
    capsys.readouterr()
    assert main(["baseline", "predict", str(tmp_path / "f"), url, "--format", "jsonl"]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert row["source"] == url and row["error"] is None


def _tls_files(folder, name):
    """A throwaway CA and a certificate for ``name`` signed by it (PEM files): (ca, cert, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deepsift test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [folder / "ca.pem", folder / "cert.pem", folder / "key.pem"]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_https_connects_to_the_checked_address_and_verifies_the_certificate_for_the_name(tmp_path):
    """The strict path connects to an IP it checked, yet TLS still checks the certificate against the host name."""
    import asyncio
    import ssl

    from deepsift.urlfetch import aget, async_client, run_sync

    ca, cert, key = _tls_files(tmp_path, "images.example")
    srv = serve("127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    srv.socket = server_ctx.wrap_socket(srv.socket, server_side=True)
    port = srv.server_address[1]
    policy = FetchPolicy(allow_networks=("127.0.0.1/32",), resolver=lambda host, p: ["127.0.0.1"])
    client_ctx = ssl.create_default_context(cafile=str(ca))

    async def get(url):
        async with async_client(policy, verify=client_ctx, timeout=10) as client:
            return await asyncio.wait_for(aget(client, url), 30)

    try:
        got = run_sync(get(f"https://images.example:{port}/a.jpg"))
        assert got.status == 200 and got.content == JPEG
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate|hostname"):
            run_sync(get(f"https://other.example:{port}/a.jpg"))  # same address, a name the certificate lacks
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


def test_fetch_url_works_where_an_event_loop_is_running(servers):
    """Sync code inside an async program (a notebook, an async server's sync helper) can still fetch."""
    from deepsift.urlfetch import afetch_url, run_sync

    one, _ = servers

    async def inside():
        blocking = fetch_url(f"{one.base}/a.jpg", policy=USER_POLICY)
        awaited = await afetch_url(f"{one.base}/a.jpg", policy=USER_POLICY)
        return blocking, awaited

    assert run_sync(inside()) == (JPEG, JPEG)  # (asyncio.run would refuse where a loop already runs)
