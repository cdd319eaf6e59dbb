"""Storage behind a narrow interface: :mod:`.base` says what, the others say how."""
