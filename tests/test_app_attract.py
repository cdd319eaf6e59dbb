"""The real Kivy app under Xvfb: it starts on its attract screen with the two choices."""

from __future__ import annotations

import numpy as np

from tests.harness.kiosk_app import png_pixels


def test_app_starts_on_the_attract_screen(kiosk_app) -> None:
    app = kiosk_app()
    app.wait_for_screen("attract")
    assert {"listen_button", "share_button", "title"} <= set(app.ids())
    assert app.text("listen_button") == "Listen to stories"
    assert app.text("share_button") == "Share your story"
    assert app.text("title") == "I Defend Rights"

    pixels = png_pixels(app.screenshot("attract"))
    assert pixels.shape == (800, 1280, 3)
    # Not blank: many distinct colours, and both buttons' colours are on screen.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    listen_blue = np.all(np.abs(pixels.astype(int) - (33, 107, 158)) < 12, axis=2)
    share_orange = np.all(np.abs(pixels.astype(int) - (199, 92, 41)) < 12, axis=2)
    assert listen_blue.mean() > 0.1 and share_orange.mean() > 0.1


def test_touching_a_choice_reaches_the_app_and_logs_no_personal_data(kiosk_app,
                                                                     tmp_path) -> None:
    app = kiosk_app()
    app.wait_for_screen("attract")
    app.tap("listen_button")  # the visitor's story browser
    app.wait_for_screen("stories")
    app.tap("back_button")
    app.wait_for_screen("attract")
    app.tap("share_button")  # starts the defender's session
    app.wait_for_screen("language")
    app.close()
    log = (tmp_path / "data" / "logs" / "kiosk.log").read_text()
    assert "attract_choice choice=share" in log
    assert "attract_choice choice=listen" in log
