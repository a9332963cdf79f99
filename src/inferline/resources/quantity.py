"""Kubernetes quantities (`100Ki`, `1.5Gi`, `500M`, `1e3`) as whole bytes.

A Model's `memory` is a Kubernetes quantity in SC2, so the samples and users' existing manifests
write it that way. The grammar is Kubernetes' own: a decimal number, then either a binary suffix
(Ki .. Ei, powers of 1024), a decimal suffix (n u m k M G T P E, powers of 1000; `k` is lower
case, `K` is not a suffix), or a decimal exponent (`e3`, `E-2`).
"""

import math
import re
from fractions import Fraction

from inferline.resources.errors import ResourceError

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

# The exponent form comes first so that `1e3` is 1 x 10^3, not 1 with an unknown suffix `e3`.
_QUANTITY = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))([eE][+-]?\d+|[A-Za-z]*)")

# Kubernetes holds quantities in an int64; anything beyond is a typo, not a machine.
_MAX_BYTES = 2**63 - 1
_MAX_EXPONENT = 30

_HINT = "use a number with an optional suffix such as 100Ki, 1Mi, 1.5Gi, 2G, 500M or 1e3"


def parse_quantity(value: str | int | float) -> int:
    """The number of bytes a quantity stands for, rounded up to a whole byte.

    Rounding up is what Kubernetes' `Quantity.Value()` does: `0.5` bytes still needs one.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ResourceError(f"a quantity must be a number or a string, not {type(value).__name__}")
    if isinstance(value, int):
        amount = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ResourceError(f"'{value}' is not a valid quantity; {_HINT}")
        amount = Fraction(repr(value))
    else:
        match = _QUANTITY.fullmatch(value)
        if match is None:
            raise ResourceError(f"'{value}' is not a valid quantity; {_HINT}")
        number, suffix = match.groups()
        amount = Fraction(number)
        if suffix in _BINARY:
            amount *= 1024 ** _BINARY[suffix]
        elif suffix in _DECIMAL:
            amount *= Fraction(10) ** _DECIMAL[suffix]
        elif suffix[:1] in ("e", "E") and len(suffix) > 1:
            exponent = int(suffix[1:])
            # Bounded first: 10 ** 10**9 would take Python minutes to compute.
            if abs(exponent) > _MAX_EXPONENT:
                raise ResourceError(f"'{value}' is out of range; {_HINT}")
            amount *= Fraction(10) ** exponent
        else:
            raise ResourceError(f"'{value}' has an unknown suffix '{suffix}'; {_HINT}")
    if amount > _MAX_BYTES:
        raise ResourceError(f"'{value}' is too large (more than 2^63 - 1 bytes)")
    if amount < 0:
        raise ResourceError(f"'{value}' is negative; a memory quantity must be 0 or more")
    return math.ceil(amount)
