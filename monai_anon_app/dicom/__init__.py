"""DICOM: PS3.15 de-identification engine and table, reading images out of DICOM, writing anonymized
images and studies back (files, zips, STOW-RS). Never imports torch.

Modules, one job each: ``options`` (DeidOptions, CID 7050), ``profile`` (the generated Table E.1-1 and
per-IOD types → tag/action plan), ``keys`` (keyed UIDs, pseudonyms, date offsets), ``dates``, ``scrub``
(the clean action), ``engine`` (the visitor), ``files`` (read / atomic write), ``pixels`` (image in and
out), ``pixel_change`` (what was done to the pixels, so what the markers may claim), ``batch`` (one file:
pixels + headers), ``outputs`` (output names from new UIDs or keyed pseudonyms), ``export`` (zip,
STOW-RS), ``mapping`` (optional link file), ``phantom`` (fake-PHI DX phantoms), ``cli``
(``monai-anon deid``), ``generate_tables``.
"""
