"""What the kiosk and the centre share, and everything that crosses the network.

This package never imports ``kiosk`` or Kivy, so the central service and the vetting
tool install and run without a GUI stack.
"""

__version__ = "0.1.0"
