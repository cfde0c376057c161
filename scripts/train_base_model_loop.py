"""The loop that produced the shipped affectlab-base weights (see docs/models/affectlab-base.md).

Run from the repository root after ``python scripts/train_base_model.py prepare``::

    OUT=build/affectlab-base/quick5 EPOCHS=5 OMP_NUM_THREADS=1 python scripts/train_base_model_loop.py

affectlab's own pieces (BaselineMethod, the ``faces`` transform, BalancedClassSampler,
save_model) in a plain PyTorch loop: the Lightning ``affectlab train`` run of
train_base_model.py did not finish an epoch within the time available on the shared machine.
"""
import os, time, torch, numpy as np
torch.set_num_threads(1); torch.manual_seed(0)
import affectlab
from affectlab.data.transforms import build_transform
from affectlab.data.samplers import BalancedClassSampler
from affectlab.data.batch import collate
from affectlab.methods.base import create_method
from affectlab.train.checkpoint import save_model
from affectlab.features.backbones import Preprocessing
ds = affectlab.load_dataset("manifest:build/affectlab-base/train.csv")
ds.transform = build_transform("faces", 48, "imagenet", train=True)
from affectlab.train.datamodule import expression_codes_of
y = expression_codes_of(ds)
sampler = BalancedClassSampler(y, seed=0, missing="share")
loader = torch.utils.data.DataLoader(ds, batch_size=64, sampler=sampler, collate_fn=collate)
space = ds.label_space if hasattr(ds, "label_space") else None
space = space.subset(["expr"]) if hasattr(space, "subset") else space
m = create_method("baseline", space, {"backbone": "builtin:cnn-small", "class_weighted": False})
opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=1e-4)
m.train(); t = time.time()
for epoch in range(int(os.environ.get("EPOCHS", "1"))):
    for i, b in enumerate(loader):
        out = m(b); loss = m.loss(out, b)["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
        if i % 10 == 0:
            print(epoch, i, float(loss), time.time() - t, flush=True)
            save_model(os.environ.get("OUT", "build/affectlab-base/quick") + "/model.ckpt", m.eval(), preprocessing=Preprocessing.named("imagenet", 48).to_dict(),
                       transform={"train": "faces", "eval": "eval"}, train_info={"note": "stopgap loop"}); m.train()
save_model(os.environ.get("OUT", "build/affectlab-base/quick") + "/model.ckpt", m.eval(), preprocessing=Preprocessing.named("imagenet", 48).to_dict(),
           transform={"train": "faces", "eval": "eval"}, train_info={"note": "stopgap loop"})
print("done", time.time() - t)
