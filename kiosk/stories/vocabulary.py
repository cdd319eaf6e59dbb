"""The regions and themes the kiosk knows how to name in every language.

A catalog's regions and themes are data (the vetting team chooses them); the screens
show each through gettext, so the usual ones are marked here for translation. A value
not listed shows as the catalog wrote it.
"""

from __future__ import annotations

from ..i18n import N_

REGIONS = (N_("Africa"), N_("Americas"), N_("Asia"), N_("Europe"), N_("Middle East"),
           N_("Oceania"))
THEMES = (N_("education"), N_("women's rights"), N_("labour rights"), N_("land"),
          N_("press freedom"), N_("water"), N_("housing"), N_("health"),
          N_("indigenous peoples' rights"), N_("environment"), N_("children's rights"),
          N_("freedom of expression"), N_("disability rights"), N_("migrants' rights"))
