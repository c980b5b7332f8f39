"""Why a handshake was refused: the text operators read, and the bounded label /metrics counts.

The label is given where the refusal is made, so rewording a message never moves a metric.
"""

import random


class Refusal(str):
    """A refusal's text (it is a str: logged, stored and shown as before) with its label."""

    label: str

    def __new__(cls, label: str, text: str):
        refusal = super().__new__(cls, text)
        refusal.label = label
        return refusal


def label_of(reason: str) -> str:
    """The metric label of a refusal; "other" for a plain string."""
    return getattr(reason, "label", "other")


# Refusals that say "not now" rather than "not you": the gateway is full or its password checks
# are queued past their bound. They are answered HTTP 503 with Retry-After before the upgrade
# (docs/contract.md §1), every other refusal with 403.
RETRYABLE = frozenset({"capacity", "auth_backlog"})


def retryable(reason: str) -> bool:
    """Whether a refusal is a retryable one (HTTP 503 + Retry-After, never written to the log)."""
    return label_of(reason) in RETRYABLE


def retry_after(base_s: int) -> int:
    """Retry-After of a retryable refusal: a random 1-2x the base, so that stations refused
    together do not all come back together."""
    return random.randint(base_s, 2 * base_s)
