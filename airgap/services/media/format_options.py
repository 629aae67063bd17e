"""The bundle formats this airgap writes, as the command line offers them (``--format``).

Kept apart from the format modules (``formats/``) so that a command's help lists them without
importing the readers and everything they need. They repeat each format class's ``option`` and
``summary``; a test proves this list and the registry agree.
"""

DEFAULT = "v2"  # what the packer writes unless another format is asked for
SUMMARIES = {
    "v2": "v2 stores each distinct content once",
    "v1": "v1 for far sides whose airgap reads only v1",
}
OPTIONS = tuple(sorted(SUMMARIES, key=lambda option: option != DEFAULT))  # the default first
