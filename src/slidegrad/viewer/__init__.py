"""``slidegrad view``: a run's slides as Deep Zoom with its slide maps as layers (:mod:`.server`)."""
