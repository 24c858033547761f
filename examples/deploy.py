"""Stand-in deploy for the example config: pretends to roll out, then reports healthy."""

import os
import sys
import time

service, env, version = sys.argv[1], sys.argv[2], sys.argv[3]
region = os.environ.get("DEPLOY_REGION", "local")
for pct in (25, 50, 100):
    print(f"[deploy] {service} {env} {version} ({region}): {pct}% of pods updated", flush=True)
    time.sleep(0.3)
print(f"[deploy] {service} {env} healthy on {version}")
