"""Container health check: the gateway's /healthz on its admin port (or the stations' port)."""

import os
import sys
import urllib.request

port = int(os.environ.get("OCPPGW_ADMIN_PORT") or 0) or int(os.environ.get("OCPPGW_PORT") or 33033)
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
