"""Why a handshake was refused: the text operators read, and the bounded label /metrics counts.

The label is given where the refusal is made, so rewording a message never moves a metric.
"""


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
