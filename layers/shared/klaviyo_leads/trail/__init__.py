"""The lead trail: each lead's journey as records (``records``), filed by the trail writer
(``delivery``)."""
