"""What the report says beside the figures: how targets were checked, fixes, what limits."""

NOTES: list[str] = []
