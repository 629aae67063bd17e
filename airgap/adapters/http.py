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
