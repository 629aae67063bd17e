"""Registry credentials come from the user's docker config or environment, and the token dance follows
the distribution spec: a malformed entry is one clear line, and the OAuth ``access_token`` alias works."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airgap.adapters.registry import Registry, credentials
from airgap.errors import EnvironmentFailure

HOST = "registry.example:5000"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doc: object) -> None:
    (tmp_path / "config.json").write_text(json.dumps(doc))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("AIRGAP_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("AIRGAP_REGISTRY_PASSWORD", raising=False)


def test_docker_config_credentials_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(b"field:s3cr:et").decode()
    _config(tmp_path, monkeypatch, {"auths": {f"https://{HOST}/v2/": {"auth": auth}}})
    assert credentials(HOST) == ("field", "s3cr:et")


@pytest.mark.parametrize("auth", ["%%%not-base64", base64.b64encode(b"\xff\xfe").decode(), "bm9jb2xvbg=="])
def test_a_malformed_docker_config_entry_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: str
) -> None:
    _config(tmp_path, monkeypatch, {"auths": {HOST: {"auth": auth}}})
    with pytest.raises(EnvironmentFailure, match="not base64 user:password"):
        credentials(HOST)


@pytest.mark.parametrize("doc", [[], {"auths": []}, {"auths": {HOST: "x"}}, {"auths": {HOST: {"auth": 5}}}])
def test_a_docker_config_of_another_shape_gives_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doc: object
) -> None:
    _config(tmp_path, monkeypatch, doc)
    assert credentials(HOST) is None


@pytest.fixture
def token_registry() -> Iterator[tuple[str, list[str]]]:
    """A loopback registry that demands a bearer token and issues it as OAuth ``access_token``."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            host = f"127.0.0.1:{self.server.server_address[1]}"
            if self.path.startswith("/token"):
                body = json.dumps({"access_token": "tok-123", "expires_in": 60}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != "Bearer tok-123":
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="reg"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()


def test_an_oauth_access_token_is_accepted(
    token_registry: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, seen = token_registry
    monkeypatch.setenv("AIRGAP_REGISTRY_USERNAME", "field")
    monkeypatch.setenv("AIRGAP_REGISTRY_PASSWORD", "pw")
    assert Registry(host, insecure=True).has_blob("demo", "sha256:" + "0" * 64) is False
    assert seen == ["", "Bearer tok-123"]
