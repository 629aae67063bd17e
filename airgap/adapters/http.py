"""The far side's one HTTP client: JSON to and from a model server on loopback.

Stdlib only (``urllib``), because it talks to nothing but the model server airgap just started
(or a port-forward to it); a refused request comes back as its status and JSON body, not as an
exception, so the smoke test can quote what the server said.
"""

from __future__ import annotations

import json
from typing import Any

LOOPBACK = "127.0.0.1"


def request_json(
    port: int, path: str, body: Any = None, timeout: float = 10, host: str = LOOPBACK
) -> tuple[int, Any]:
    """POSTs ``body`` as JSON (GETs when it is None) and returns the status and the decoded answer.

    Raises OSError when nothing answers and ValueError when a 2xx answer is not JSON: the caller
    decides whether that means "not ready yet" or "the model is broken".
    """
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://{host}:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None


class KeepAlive:
    """One keep-alive connection to a model server: every request on it reaches the same server
    process, which a new connection does not promise while two servers share a port (a promote
    starts the new version beside the old one). Same answers as ``request_json``."""

    def __init__(self, port: int, timeout: float = 10, host: str = LOOPBACK) -> None:
        import http.client

        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request_json(self, path: str, body: Any = None) -> tuple[int, Any]:
        """POSTs ``body`` as JSON (GETs when it is None) on this connection; raises OSError when
        the server closed it or never answered, ValueError when a 2xx answer is not JSON."""
        import http.client

        data = json.dumps(body).encode() if body is not None else None
        try:
            self._conn.request(
                "POST" if data is not None else "GET",
                path,
                body=data,
                headers={"Content-Type": "application/json"},
            )
            response = self._conn.getresponse()
            payload = response.read()
        except http.client.HTTPException as exc:  # a closed or broken connection: nothing answered
            self.close()
            raise OSError(f"the connection broke: {exc!r}") from None
        try:
            decoded = json.loads(payload or b"null")
        except ValueError:
            if 200 <= response.status < 300:
                raise
            decoded = None
        return response.status, decoded

    def close(self) -> None:
        """Closes the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
