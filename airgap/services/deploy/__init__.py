"""The far side's stage: a verified bundle installed, smoke-tested, compared, promoted and accepted.

The installer, its journal and receipts, the install targets, the smoke test, candidates and the
far side's inventory. May import ``services/media`` and the shared ``services/*.py`` modules;
never ``build`` or ``evidence``.
"""
