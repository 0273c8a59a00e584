"""What may leave the machine (DESIGN.md "Privacy and safety").

- An endpoint on loopback (127.0.0.0/8, ::1, localhost) is local: a `vllm serve` or llama.cpp
  server on this machine needs no permission.
- A remote endpoint receives rows of a cohort only when the cohort is synthetic (checked by
  content: RunDir.is_synthetic) or the user names that host: `--allow-external-api HOST`.
- A request seed sent to a provider is keyed with a secret kept in the run directory, so the
  provider's logs cannot be linked back to a window (a seed computed from the window id could be
  inverted by trying every participant and hour).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

OPENAI_HOST = "api.openai.com"


def endpoint_host(base_url: str | None) -> str:
    """The host name requests go to (api.openai.com when no base URL is given)."""
    if not base_url:
        return OPENAI_HOST
    host = urlsplit(base_url if "//" in base_url else f"//{base_url}").hostname
    if not host:
        raise ValueError(f"--base-url: no host in '{base_url}'")
    return host.lower()


def is_loopback(base_url: str | None) -> bool:
    host = endpoint_host(base_url)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(base_url: str | None, *, synthetic: bool, allowed_host: str | None, cohort: Path) -> str:
    """'local', 'synthetic' or 'allowed' when rows may go to this endpoint; else ValueError."""
    if is_loopback(base_url):
        return "local"
    if synthetic:
        return "synthetic"
    host = endpoint_host(base_url)
    if allowed_host and allowed_host.lower() == host:
        return "allowed"
    hint = f" (--allow-external-api names '{allowed_host}', not this host)" if allowed_host else ""
    raise ValueError(
        f"{cohort}: the cohort is not marked synthetic (or its table no longer matches its provenance); "
        f"the openai backend would send its rows to {host}{hint}. If your data-use agreement allows it, "
        f"pass --allow-external-api {host}"
    )


def run_secret(run_root: str | Path) -> bytes:
    """A random key kept in RUN/.secret (owner-only), made on first use."""
    path = Path(run_root) / ".secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def keyed_seed(secret: bytes, seed: int, window_id: str, candidate: int) -> int:
    """A 31-bit request seed: stable for (seed, window, candidate) in one run, unlinkable outside it."""
    mac = hmac.new(secret, f"{seed}:{window_id}:{candidate}".encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:4], "big") & 0x7FFFFFFF
