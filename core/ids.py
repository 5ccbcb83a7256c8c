"""Row ids, versions and offsets are 64-bit signed integers in every database deskpilot runs on (SQLite, PostgreSQL):
one bound, stated in the API schema and checked before a lookup, so an id past it is a clear answer, never a crash."""

MAX_DB_INT = 2**63 - 1


def storable_id(value: int) -> bool:
    """True when `value` can be a row id (positive and within 64 bits); a lookup of any other id finds nothing."""
    return 0 < value <= MAX_DB_INT
