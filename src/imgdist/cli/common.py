"""What the sub-commands share: exit statuses and argparse types."""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def comma_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [part.strip() for part in text.split(",") if part.strip()]


def whole_numbers(text: str) -> list[int]:
    """'32,256' -> [32, 256]; each at least 1."""
    numbers = []
    for part in comma_list(text):
        if not part.isdigit() or int(part) < 1:
            msg = f"give whole numbers of at least 1, e.g. 32,256; {part!r} is not one."
            raise argparse.ArgumentTypeError(msg)
        numbers.append(int(part))
    return numbers
