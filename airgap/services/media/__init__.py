"""The media's stage: a bundle on USB or DVD, opened, proved, split, joined and streamed out.

Every reader of a bundle goes through ``opening``; the formats, parity parts, verification and
the re-hashing extraction live here. Imports only the shared ``services/*.py`` modules.
"""
