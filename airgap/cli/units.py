"""How amounts are shown: one spelling for every command and progress display."""


def human_bytes(n: float) -> str:
    """Decimal units, as disks and media are sold (the same units as ``--part-size``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB
