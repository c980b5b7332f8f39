"""Which frames are schema-checked: one rule for the gateway and the portal alike.

OCPPGW_VALIDATION picks the directions checked and ValidationExemption rows take actions out.
Pure: the exemptions are handed in (config_rows.exemptions() reads them).
"""

from stations import validation


class ValidationPolicy:
    __slots__ = ("exemptions", "mode")

    def __init__(self, mode: str, exemptions: frozenset = frozenset()):
        self.mode, self.exemptions = mode, exemptions

    def applies(self, direction: str, action: str | None) -> bool:
        """Whether frames of `action` going `direction` ("upstream"/"downstream") are checked."""
        if self.mode == "off" or (self.mode != "all" and self.mode != direction):
            return False
        return (action, direction) not in self.exemptions and (
            action,
            "both",
        ) not in self.exemptions

    def check(self, direction, version, action, kind, payload):
        """The schema violation of this frame, if it is checked at all (else None)."""
        if not self.applies(direction, action):
            return None
        return validation.check(version, action, kind, payload)
