"""Audio for the kiosk: device checks, recorder and player. No Kivy in this layer."""
