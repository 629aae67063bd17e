"""The only code that touches the world: container engines, registries, pip, archives, keys, files.

An adapter's contract is to turn its library's exceptions into airgap errors at its boundary, with a
message that says what to do, so that services map failures to exit codes without knowing ``docker``,
``requests`` or ``subprocess``.
"""
