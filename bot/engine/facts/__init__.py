"""What the engine tells the people in a deployment's thread, an alert thread or the
announce channel: typed facts, recorded in the outbox (``outbox.note``, ``announce``,
``alert_outbox.reply``) in the transaction of the change they report.

The engine writes no sentence here: ``bot/slack/notes.py`` turns each fact into words,
command hints and Block Kit when the notifier delivers it. A fact's ``kind`` is stored
with its JSON payload, so it is a stable name: rename a class freely, never its kind
(an older or newer process may read the row). Adding a field needs a default, for the
same reason; readers ignore fields they do not know.

Field conventions: text that came from people or programs (reasons, build results, alert
names, check output) is ``Untrusted`` and stored raw, the renderer escapes it; ``output``
is a program's output, shown in a code block; a field listed in ``MRKDWN`` holds mrkdwn
the engine composed for the status card and the audit trail as well (its parts escaped).

``base`` holds the machinery (``Fact``, the registry by kind, ``load``); the facts are in
``deploy`` (request, approvals, build, deploy), ``rollout`` (traffic, checks, verdicts,
pauses, rollbacks) and ``alerts`` (announcements, alert threads), all importable from here.
"""

from __future__ import annotations

from bot.engine.facts.alerts import (
    AlertDismissed,
    AlertResolved,
    AutoRollbackStarted,
    FreezeEnded,
    FreezeStarted,
    Locked,
    Redeploying,
    RollbackStarted,
    RollingBackForAlert,
    StartedFromAlert,
    UndoDeploying,
    UndoDone,
    UndoIncomplete,
    UndoNeedsApproval,
    Unlocked,
)
from bot.engine.facts.base import (
    FACTS,
    UNTRUSTED,
    Fact,
    Line,
    MetricLine,
    Outcome,
    Undecided,
    Untrusted,
    load,
)
from bot.engine.facts.deploy import (
    Approved,
    AwaitingHealth,
    BuildPassed,
    BuildReused,
    BuildRunning,
    BuildStarted,
    Cancelled,
    ChecksRefused,
    Deploying,
    ExpiredUnhandled,
    GaveUp,
    Healthy,
    LatestVersion,
    ManyCommits,
    MoreApprovalsNeeded,
    RateLimited,
    Rejected,
    RequestExpired,
    RunFailed,
    StoppedBeforeStart,
    TakenOver,
)
from bot.engine.facts.rollout import (
    CheckReport,
    ChecksPassed,
    Deployed,
    Live,
    NoAnalysis,
    NothingToGoBackTo,
    Paused,
    Pressed,
    RollbackFailed,
    RollbackKept,
    RollbackWindow,
    RolledBack,
    RollingBack,
    StopFailed,
    TrafficChange,
)

__all__ = [
    "FACTS",
    "UNTRUSTED",
    "AlertDismissed",
    "AlertResolved",
    "Approved",
    "AutoRollbackStarted",
    "AwaitingHealth",
    "BuildPassed",
    "BuildReused",
    "BuildRunning",
    "BuildStarted",
    "Cancelled",
    "CheckReport",
    "ChecksPassed",
    "ChecksRefused",
    "Deployed",
    "Deploying",
    "ExpiredUnhandled",
    "Fact",
    "FreezeEnded",
    "FreezeStarted",
    "GaveUp",
    "Healthy",
    "LatestVersion",
    "Line",
    "Live",
    "Locked",
    "ManyCommits",
    "MetricLine",
    "MoreApprovalsNeeded",
    "NoAnalysis",
    "NothingToGoBackTo",
    "Outcome",
    "Paused",
    "Pressed",
    "RateLimited",
    "Redeploying",
    "Rejected",
    "RequestExpired",
    "RollbackFailed",
    "RollbackKept",
    "RollbackStarted",
    "RollbackWindow",
    "RolledBack",
    "RollingBack",
    "RollingBackForAlert",
    "RunFailed",
    "StartedFromAlert",
    "StopFailed",
    "StoppedBeforeStart",
    "TakenOver",
    "TrafficChange",
    "Undecided",
    "UndoDeploying",
    "UndoDone",
    "UndoIncomplete",
    "UndoNeedsApproval",
    "Unlocked",
    "Untrusted",
    "load",
]
