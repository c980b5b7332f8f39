"""Which template applies to a frame: per-station and per-action overrides over the settings.

Pure: the gateway loads TopicRule rows into a RuleSet and swaps it in when rules change.
Precedence (docs/contract.md §2): station+action > station > action > setting > default.
"""

from dataclasses import dataclass

DIRECTIONS = ("upstream", "reply", "error", "downstream", "notice")


@dataclass(frozen=True, slots=True)
class Rule:
    direction: str
    action: str  # "" = every action
    station_key: str  # "" = every station
    template: str


class RuleSet:
    def __init__(self, defaults: dict[str, str], rules: list[Rule] = ()):
        self.defaults = dict(defaults)
        self._rules = {(r.direction, r.action, r.station_key): r.template for r in rules}
        self.has_station_rules = any(r.station_key for r in rules)
        self.version = tuple(sorted(self._rules.items()))

    def station_templates(self, direction: str) -> list[str]:
        """Per-station templates of a direction (for matching downstream topics)."""
        return [t for (d, _, key), t in self._rules.items() if d == direction and key]

    def template(self, direction: str, action: str | None, station_key: str) -> str:
        """The template for one frame, most specific rule first."""
        rules = self._rules
        if rules:
            action = action or ""
            if self.has_station_rules:
                for key in ((direction, action, station_key), (direction, "", station_key)):
                    found = rules.get(key)
                    if found:
                        return found
            # an action-blank global rule applies to every action, over the setting
            found = rules.get((direction, action, "")) or rules.get((direction, "", ""))
            if found:
                return found
        return self.defaults[direction]
