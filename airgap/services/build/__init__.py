"""The workstation's stage: from a project and a target profile to a signed bundle.

Probing the target, the wheelhouses, the model image, the data contract and acceptance set, the
policy check, packing and signing, delta plans, and the far side's own rebuild of a bundle's image.
May import ``services/media`` (a built bundle is verified and packed with the media's code) and the
shared ``services/*.py`` modules; never ``deploy`` or ``evidence``.
"""
