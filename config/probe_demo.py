# A probe on the frozen demo backbone (EfficientNet-Lite0, offline ImageNet weights):
#   python scripts/train_probe.py config/probe_demo.py --options probe=mlp2 probe_loss=ce session_name=S
# Keys: docs/PROBES.md.
_base_ = ["./demo.py"]

session_name = "demo_probe_linear_bce"
probe = "linear"               # linear | mlp2 | mlp3 | bcos_linear | bcos_mlp2 | bcos_mlp3
probe_hidden = 0               # hidden width of MLP heads; 0 = the feature width D
probe_loss = "bce"             # bce (Eq. 4) | ce (Eq. 1, target y / sum(y))
probe_bce_off_value = 0.0      # BCE target of absent classes: 0 (Eq. 4) or "1/C" (authors' B-cos code)
probe_recipe = "adam"          # adam (paper: lr 1e-3, warm-up + cosine) | sgd (code: lr 3 x10, step x0.1 / 6 ep)
probe_epochs = 30
probe_lr = None                # None: the recipe's lr
probe_warmup_epochs = None     # None: the recipe's warm-up (adam 5, sgd 1)
probe_batch_size = 32
probe_augment = False          # True: recompute features of augmented images every step (slower, exact)
probe_cache = True             # False: recompute un-augmented features every step (no cache)
probe_cache_dir = ""           # "" = <work_dir_root>/feature_cache
