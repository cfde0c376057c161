"""One reader per dataset format; importing this package registers them all.

Each module registers its reader with :func:`affectlab.data.datasets.register_reader`;
:func:`affectlab.data.datasets.load_dataset` picks one by the spec's FORMAT.
"""

from affectlab.data.readers import abaw, affectnet, afewva, ckplus, disfa, emotic, emotionet, fer2013, imagefolder, manifest, rafdb  # noqa: F401
