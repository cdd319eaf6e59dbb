"""Staff mode behind the PIN: the PIN hash and ``kiosk set-pin`` (:mod:`.pin`), the
persistent lockout (:mod:`.lockout`), what staff see (:mod:`.facts`) and the wipe of
unsent submissions (:mod:`.wipe`). No Kivy here: the staff screen uses these.
"""
