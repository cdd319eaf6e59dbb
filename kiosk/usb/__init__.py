"""USB transfer for venues without a network (issue 13): ``kiosk export DIR`` writes
the unsent sealed submissions to a stick (export.py); ``kiosk import DIR`` takes back
the service's receipts and a signed catalog with its stories (import_.py); drive.py
finds the stick. The bundle's format is sync/bundle.py, shared with ``central import``.
"""
