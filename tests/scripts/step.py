"""A CI/deploy step for tests: logs its argv, prints output, then behaves as told.

Environment: STEP_LOG (file to append a JSON line of argv to), STEP_SLEEP (seconds),
STEP_EXIT (exit code), STEP_MARK (file created once the step has started), STEP_SIGNAL
(a signal number the step then sends itself instead of exiting, as by the OOM killer),
STEP_ARTIFACT (a build: report `<STEP_ARTIFACT><version>-<pid>` as its artifact, unique per
build, and a commit, through $SHIPBOT_OUTPUT as a real build would).
"""

import json
import os
import signal
import sys
import time

log = os.environ.get("STEP_LOG")
if log:
    with open(log, "a") as fh:
        fh.write(json.dumps(sys.argv[1:]) + "\n")
mark = os.environ.get("STEP_MARK")
if mark:
    open(mark, "w").close()
for i in range(30):
    print(f"output line {i} of {sys.argv[1:]}", flush=True)
time.sleep(float(os.environ.get("STEP_SLEEP", "0")))
if os.environ.get("STEP_SIGNAL"):
    os.kill(os.getpid(), signal.Signals(int(os.environ["STEP_SIGNAL"])))
code = int(os.environ.get("STEP_EXIT", "0"))
if os.environ.get("STEP_ARTIFACT") and code == 0:
    with open(os.environ["SHIPBOT_OUTPUT"], "a") as fh:
        fh.write(f"artifact={os.environ['STEP_ARTIFACT']}{sys.argv[3]}-{os.getpid()}\n")
        fh.write(f"commit={os.getpid():040x}\n")
print(f"done with code {code}", flush=True)
sys.exit(code)
