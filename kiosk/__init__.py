"""The I Defend Rights touchscreen kiosk: record sealed testimonies, play published stories."""

__version__ = "0.1.0"
