"""argparse types shared by main.py and the scripts: counts bounded before they reach a tokenizer or a buffer."""
from __future__ import annotations

import argparse

MAX_INT = 2**31 - 1            # a count above this is a typo; it would overflow the tokenizer or a buffer


def positive_int(text: str, limit: int = MAX_INT) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    if value > limit:
        raise argparse.ArgumentTypeError(f"{value} is larger than {limit:,}, more than any model here can use; "
                                         f"give a smaller number")
    return value
