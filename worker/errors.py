"""Worker error tiers: what the participant sees versus what is retried. Imports nothing but the stdlib."""


class SubmissionError(Exception):
    """The submission itself is at fault; the message is shown to the participant as it is (one line)."""


class RetryableError(Exception):
    """Infrastructure failed (database, broker, disk); the evaluation is retried up to the attempt cap."""
