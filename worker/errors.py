"""Worker error tiers: what the participant sees versus what is retried. Imports nothing but the stdlib."""


class SubmissionError(Exception):
    """The submission itself is at fault; the message is shown to the participant as it is (one line)."""


class RetryableError(Exception):
    """Infrastructure failed (database, broker, disk); the evaluation is retried up to the attempt cap."""


class InfrastructureError(Exception):
    """Infrastructure cannot run this evaluation and retrying will not help (a sandbox control missing on
    the worker host): failed at once, the message kept for organisers, a generic line for the participant,
    and the team's quota untouched."""
