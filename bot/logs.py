"""Log hygiene for the running bot: every handler redacts, access logs drop query strings.

Installed by whoever configures logging (``shipbot serve``, the console) once the bot,
and with it its redactor, exists; handlers are filtered rather than loggers because a
logger's own filters never see the records its children propagate to it.
"""

from __future__ import annotations

import logging

from bot.redact import RedactingFilter, Redactor

ACCESS_LOGGER = "uvicorn.access"
# Bolt logs a request whose signature does not verify with its whole body: whatever an
# attacker (or a misconfigured proxy) sent would land in our logs.
BOLT_VERIFICATION_LOGGER = "slack_bolt.RequestVerification"


class NoQueryString(logging.Filter):
    """uvicorn's access line without ``?...``: query strings carry tokens more often than
    anything worth keeping (its arguments: client, method, path, HTTP version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


class NoSignatureFailureBodies(logging.Filter):
    """Keeps Bolt's 'invalid signature' line, without the unverified body it appends."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Invalid request signature detected"):
            record.msg, record.args = ("Invalid request signature detected (the unverified "
                                       "request body is not logged)"), ()
        return True


def quiet_signature_failures() -> None:
    """Idempotent: every Bolt app shares that logger, and tests build many apps."""
    _add_once(logging.getLogger(BOLT_VERIFICATION_LOGGER), NoSignatureFailureBodies())


def protect_logs(redactor: Redactor) -> None:
    """Redact on every handler configured so far (root, uvicorn's, any other); strip query
    strings from access lines. Call after logging (and uvicorn's config) is set up."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(old)  # a newer bot's secrets replace the old ones
            handler.addFilter(RedactingFilter(redactor))
    _add_once(logging.getLogger(ACCESS_LOGGER), NoQueryString())
    quiet_signature_failures()


def _add_once(logger: logging.Logger, new: logging.Filter) -> None:
    if not any(type(f) is type(new) for f in logger.filters):
        logger.addFilter(new)
