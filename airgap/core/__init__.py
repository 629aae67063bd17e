"""Pure logic on values: profiles and wheel tags, the bundle format, policy, SBOM and smoke verdicts.

Nothing in this package runs a subprocess, opens a socket, reads the clock or writes a file: bytes and
values come in, values or errors go out. That keeps every security decision testable on plain inputs
and lets the verifier trust these parsers with data it has not yet accepted.
"""
