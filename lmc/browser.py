"""Headless Chromium as on a cluster node without internet: a fresh profile, no background fetches, and every
http(s) request sent to a dead proxy, so a page that needs the network shows nothing."""
import shutil
import subprocess
import tempfile
from pathlib import Path

OFFLINE = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=10000")  # virtual time: scripts run to the end, however slow the machine


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run(page: Path, *args: str, timeout: float = 120) -> str:
    """Open `page` (a local file) with `args` (--dump-dom, --screenshot=...); its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), *OFFLINE, f"--user-data-dir={profile}", *args, Path(page).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return proc.stdout
