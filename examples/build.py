"""Stand-in CI build for the example config: prints a few log lines and succeeds.

`--latest SERVICE` prints the newest "built" version, as a real CI lookup would.
Set EXAMPLE_BUILD_FAIL=1 to watch a failing build.
"""

import os
import sys
import time

if sys.argv[1] == "--latest":
    print("v1.4.2")
    sys.exit(0)
service, version = sys.argv[1], sys.argv[2]
for step in ("checkout", "install dependencies", "unit tests", f"image {service}:{version}"):
    print(f"[build] {step} ... ok", flush=True)
    time.sleep(0.3)
if os.environ.get("EXAMPLE_BUILD_FAIL"):
    print("[build] integration tests ... FAILED (3 failures)")
    sys.exit(1)
print(f"[build] pushed registry.example.com/{service}:{version}")
