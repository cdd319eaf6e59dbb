"""Test harness: a private PulseAudio with a virtual microphone and speakers, espeak-ng
speech, a private Xvfb display and a driver for the real kiosk app."""
