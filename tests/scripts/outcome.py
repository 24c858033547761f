"""A build or deploy for the conformance suite: the version (last argument) says how it
ends: ``fail*`` exits 3, ``slow*`` runs for a minute (until cancelled), else exits 0."""

import sys
import time

version = sys.argv[-1]
print(f"working on {version}", flush=True)
if version.startswith("slow"):
    time.sleep(60)
sys.exit(3 if version.startswith("fail") else 0)
