"""Typed rejections of ISO 20022 messages.

Every refusal carries the ISO 20022 external reason code a partner expects back (in an
``admi.002`` or a ``pacs.002`` RJCT), the XPath of the fault when there is one, and the
offending message id when it could be read.

    GatewayError
     └── InvalidInput
          ├── MessageRejected        any code below; .code .xpath .detail .msg_id
          │    ├── DuplicateMessage  DU01 (message id) / AM05 (UETR)   kind=conflict
          │    └── SignatureInvalid  DS0B                              kind=unauthorized
          └── AmountError            AM12   a domain amount that has no ISO form
"""

from __future__ import annotations

from typing import ClassVar

from gateway.errors import ErrorKind, InvalidInput

# ISO 20022 external reason codes used by this adapter (ExternalStatusReason1Code list).
FF01 = "FF01"  # invalid file format: not XML, hostile, too big, unknown message or version
CH21 = "CH21"  # required compulsory element missing
CH17 = "CH17"  # element not admitted
CH16 = "CH16"  # element content formally incorrect; header and document disagree
AM12 = "AM12"  # invalid amount
AM03 = "AM03"  # currency not allowed
AM10 = "AM10"  # control sum wrong
AM18 = "AM18"  # number of transactions wrong
AM05 = "AM05"  # duplication (UETR already instructed)
DU01 = "DU01"  # duplicate message id
DT01 = "DT01"  # invalid date
RC01 = "RC01"  # bank identifier (BIC) incorrect
DS0B = "DS0B"  # data signature missing or invalid


class MessageRejected(InvalidInput):
    """A message refused before it touched any state.

    ``code`` is per instance (the reason varies), unlike most gateway errors.
    """

    code: ClassVar[str] = FF01
    title = "ISO 20022 message rejected"

    def __init__(
        self, code: str, detail: str, *, xpath: str | None = None, msg_id: str | None = None
    ) -> None:
        super().__init__(detail, xpath=xpath, msg_id=msg_id)
        # The reason code varies per refusal; an instance attribute shadows the class default.
        object.__setattr__(self, "code", code)
        self.xpath = xpath
        self.msg_id = msg_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, xpath={self.xpath!r}, "
            f"detail={self.detail!r}, msg_id={self.msg_id!r})"
        )


class DuplicateMessage(MessageRejected):
    # A duplicate is valid input clashing with state: 409, not 400.
    kind: ClassVar[ErrorKind] = "conflict"  # type: ignore[assignment]
    title = "Duplicate ISO 20022 message"


class SignatureInvalid(MessageRejected):
    kind: ClassVar[ErrorKind] = "unauthorized"  # type: ignore[assignment]
    title = "ISO 20022 signature missing or invalid"

    def __init__(self, detail: str, *, msg_id: str | None = None) -> None:
        super().__init__(DS0B, detail, xpath="/BizMsg/AppHdr/Sgntr", msg_id=msg_id)


class AmountError(InvalidInput):
    code = AM12
    title = "Amount has no exact ISO 20022 form"


__all__ = [
    "AM03",
    "AM05",
    "AM10",
    "AM12",
    "AM18",
    "CH16",
    "CH17",
    "CH21",
    "DS0B",
    "DT01",
    "DU01",
    "FF01",
    "RC01",
    "AmountError",
    "DuplicateMessage",
    "MessageRejected",
    "SignatureInvalid",
]
