"""Using trained and pretrained models: the asset hub (:mod:`affectlab.runtime.assets`) and model resolution.

Kept free of heavy imports so ``import affectlab.runtime.assets`` stays cheap.
"""
