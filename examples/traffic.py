"""Stand-in traffic router for the example config's canary: prints what it would do.

A real one would call the mesh or load balancer (Istio, Linkerd, an ALB, nginx) with the
weight Shipbot asks for; the argv templates in shipbot.yml decide what runs.
"""

import sys

action, service = sys.argv[1], sys.argv[2]
if action == "set-weight":
    print(f"[traffic] {service}: {sys.argv[3]}% of requests now go to the canary", flush=True)
elif action == "promote":
    print(f"[traffic] {service}: canary promoted; it is the stable version now")
elif action == "abort":
    print(f"[traffic] {service}: all traffic back on the stable version; canary removed")
else:
    sys.exit(f"unknown action {action!r}")
