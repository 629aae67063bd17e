"""The evidence the far side keeps and exports: signed attestations of what it checked, and OSCAL.

May import ``services/deploy``, ``services/media`` and the shared ``services/*.py`` modules; nothing
below imports it (the installer receives its attestation writer as an argument).
"""
