"""OCPP-J's names and numbers in one table: frame types and error codes, per version.

Pure. 1.6J and 2.0.1 Part 4 misspell "Occurence"; 2.1 fixed it. 1.6 calls the catch-all format
error FormationViolation and has neither RpcFrameworkError nor MessageTypeNotSupported. The
canonical spelling everywhere inside the gateway is 2.1's; `spell()` writes a station's own.
"""

CALL, CALLRESULT, CALLERROR, CALLRESULTERROR, SEND = 2, 3, 4, 5, 6
TYPE_NAMES = {2: "CALL", 3: "CALLRESULT", 4: "CALLERROR", 5: "CALLRESULTERROR", 6: "SEND"}
# 1.6J §4.1.3 and 2.0.1 §4.1.3: the frame types each version defines
TYPES_BY_VERSION = {"1.6": (2, 3, 4), "2.0.1": (2, 3, 4), "2.1": (2, 3, 4, 5, 6)}

GENERIC = {"1.6": "FormationViolation", "2.0.1": "FormatViolation", "2.1": "FormatViolation"}
OCCURRENCE = {
    "1.6": "OccurenceConstraintViolation",
    "2.0.1": "OccurenceConstraintViolation",
    "2.1": "OccurrenceConstraintViolation",
}
TYPE_CONSTRAINT = "TypeConstraintViolation"
PROPERTY_CONSTRAINT = "PropertyConstraintViolation"
# the other spelling of a code -> the canonical (2.1) one
ALIASES = {
    "OccurenceConstraintViolation": "OccurrenceConstraintViolation",
    "FormationViolation": "FormatViolation",
}
_TO_16 = {"RpcFrameworkError": "FormationViolation", "MessageTypeNotSupported": "NotSupported"}
# every error code of 1.6, 2.0.1 and 2.1, both spellings
ERROR_CODES = frozenset(
    "NotImplemented NotSupported InternalError ProtocolError SecurityError FormationViolation "
    "FormatViolation PropertyConstraintViolation OccurenceConstraintViolation "
    "OccurrenceConstraintViolation TypeConstraintViolation GenericError RpcFrameworkError "
    "MessageTypeNotSupported".split()
)


def generic_code(version: str) -> str:
    """The catch-all format error code of a version ("FormationViolation" on 1.6)."""
    return GENERIC[version]


def rpc_error_code(version: str) -> str:
    """The code for a frame that cannot be classified: 1.6 has no RpcFrameworkError."""
    return GENERIC["1.6"] if version == "1.6" else "RpcFrameworkError"


def normalize(code: str) -> str:
    """Map either spelling of a code to the canonical (2.1) one."""
    return ALIASES.get(code, code)


def spell(code: str, version: str) -> str:
    """Spell an error code as the given version's peers expect it."""
    code = ALIASES.get(code, code)
    if code == "OccurrenceConstraintViolation":
        return OCCURRENCE[version]
    if code == "FormatViolation":
        return GENERIC[version]
    if version == "1.6":
        return _TO_16.get(code, code)
    return code
