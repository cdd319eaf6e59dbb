"""What decides what is on the kiosk's disk: the store, key custody, manifest sealing,
the start-up sweep and the disk-full ballast.

Kept empty on purpose: the recorder imports ``vault.ballast`` and custody imports the
recorder, so this package must not import its modules itself.
"""
