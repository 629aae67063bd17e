"""A registry, spoken to over the OCI Distribution API: push an OCI layout with its digests intact.

``docker push`` recompresses layers, so the digest on the far side would differ from the one the
bundle signed. Pushing our own blobs and manifest byte for byte keeps it: the manifests can name
the image by the digest that was verified.

Credentials come from the docker config (``~/.docker/config.json`` or ``DOCKER_CONFIG``) or from
``AIRGAP_REGISTRY_USERNAME``/``AIRGAP_REGISTRY_PASSWORD`` — never from the command line.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import requests

from airgap.adapters.oci import MANIFEST_MT, OciImage, blob_path
from airgap.errors import EnvironmentFailure, IntegrityError


def _docker_config_auth(registry: str) -> tuple[str, str] | None:
    cfg_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        data = json.loads((cfg_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    auths = data.get("auths") if isinstance(data, dict) else None
    for key, entry in (auths if isinstance(auths, dict) else {}).items():
        host = re.sub(r"^https?://", "", key).split("/", 1)[0]
        if host != registry or not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
            continue
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except ValueError:  # binascii.Error and UnicodeDecodeError both are
            sep = ""
        if not sep:
            raise EnvironmentFailure(
                f"the credentials for {registry} in {cfg_dir / 'config.json'} are not base64 user:password",
                hint=f"run `docker login {registry}` again, or set AIRGAP_REGISTRY_USERNAME and "
                "AIRGAP_REGISTRY_PASSWORD",
            )
        return user, password
    return None


def credentials(registry: str) -> tuple[str, str] | None:
    """Registry credentials from the environment first, then the docker config; never from the command line,
    where other users of the host could read them in the process list."""
    user = os.environ.get("AIRGAP_REGISTRY_USERNAME")
    password = os.environ.get("AIRGAP_REGISTRY_PASSWORD")
    if user and password:
        return user, password
    return _docker_config_auth(registry)


class Registry:
    """One registry host. ``insecure`` means plain HTTP (a lab registry on loopback)."""

    def __init__(self, host: str, insecure: bool = False, ca_bundle: Path | None = None) -> None:
        self.host = host
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.session = requests.Session()
        self.session.verify = str(ca_bundle) if ca_bundle else True
        self.session.trust_env = False  # a far-side registry is never reached through a proxy
        self.creds = credentials(host)

    def _request(self, method: str, url: str, **kw: Any) -> requests.Response:
        try:
            resp = self.session.request(method, url, timeout=300, **kw)
            if resp.status_code == 401 and self.creds:
                resp = self._authenticate_and_retry(resp, method, url, **kw)
            return resp
        except requests.exceptions.SSLError as exc:
            raise EnvironmentFailure(
                f"TLS to registry {self.host} failed: {exc}",
                hint="pass the registry's CA with --ca-bundle, or --insecure-registry for a lab registry",
            ) from None
        except requests.exceptions.RequestException as exc:
            raise EnvironmentFailure(f"registry {self.host} did not answer: {exc}") from None

    def _authenticate_and_retry(
        self, resp: requests.Response, method: str, url: str, **kw: Any
    ) -> requests.Response:
        assert self.creds is not None
        challenge = resp.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("basic"):
            self.session.auth = self.creds
        elif challenge.lower().startswith("bearer"):
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            token_resp = self.session.get(
                params.get("realm", ""),
                params={k: v for k, v in params.items() if k in ("service", "scope")},
                auth=self.creds,
                timeout=60,
            )
            try:
                body = token_resp.json() if token_resp.ok else None
            except ValueError:
                body = None
            # The distribution spec's token, or its OAuth 2 alias.
            token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
            if not token:
                raise EnvironmentFailure(
                    f"registry {self.host} refused the credentials", hint="check docker login"
                )
            self.session.headers["Authorization"] = f"Bearer {token}"
        if "data" in kw and hasattr(kw["data"], "seek"):
            kw["data"].seek(0)
        return self.session.request(method, url, timeout=300, **kw)

    def _check(self, resp: requests.Response, what: str) -> None:
        if resp.status_code >= 400:
            raise EnvironmentFailure(
                f"registry {self.host}: {what} failed: HTTP {resp.status_code} {resp.text[:200]}"
            )

    def has_blob(self, repo: str, digest: str) -> bool:
        """Whether the repository already holds the blob, so a push skips layers the registry has (a 401
        without credentials counts as no)."""
        return self._request("HEAD", f"{self.base}/v2/{repo}/blobs/{digest}").status_code == 200

    def push_blob(self, repo: str, digest: str, path: Path) -> None:
        """Uploads one blob in a single PUT with its digest in the URL, so the registry itself checks the
        bytes against the digest the bundle signed; a blob it already has is skipped."""
        with open(path, "rb") as fh:
            self._upload(repo, digest, fh, path.stat().st_size)

    def push_stream(self, repo: str, digest: str, body: Any) -> None:
        """Uploads one blob made on demand (``body``: readable, with a length) the same way, so the
        registry checks the streamed bytes against the signed digest; skipped when it has the blob."""
        self._upload(repo, digest, body, len(body))

    def _upload(self, repo: str, digest: str, body: Any, size: int) -> None:
        if self.has_blob(repo, digest):
            return
        start = self._request("POST", f"{self.base}/v2/{repo}/blobs/uploads/")
        self._check(start, "starting an upload")
        location = start.headers.get("Location", "")
        if location.startswith("/"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        done = self._request(
            "PUT",
            f"{location}{sep}digest={digest}",
            data=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        self._check(done, f"uploading {digest}")

    def push_image(self, image: OciImage, repo: str, tag: str) -> str:
        """Pushes blobs then the manifest, unchanged; returns ``host/repo@digest`` after checking it."""
        for digest in [image.config_digest, *(d for d, _ in image.layers)]:
            if digest in image.streams:
                self.push_stream(repo, digest, image.streams[digest]())
            else:
                self.push_blob(repo, digest, blob_path(image.layout, digest))
        manifest = blob_path(image.layout, image.manifest_digest).read_bytes()
        resp = self._request(
            "PUT",
            f"{self.base}/v2/{repo}/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": MANIFEST_MT},
        )
        self._check(resp, "pushing the manifest")
        returned = resp.headers.get("Docker-Content-Digest")
        if returned and returned != image.manifest_digest:
            raise IntegrityError(
                f"registry {self.host} stored the manifest as {returned}, not {image.manifest_digest}"
            )
        return f"{self.host}/{repo}@{image.manifest_digest}"
