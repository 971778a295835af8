"""The one exception a bad sample raises.

Every per-sample transform raises `SkipSample(reason)` for input it cannot use (a corrupt
file, a clip too short, a malformed metadata row). The shard loop catches exactly this type,
counts it and records the reason, so one bad file never stops a stage and no real bug hides
behind a bare `except:`.
"""


class SkipSample(Exception):
    """A sample that cannot be used; `reason` says why, in words for the manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
