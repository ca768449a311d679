# The built-in demo's transformer: timm ViT-Tiny trained from scratch on the
# synthetic demo set (no weights to download), maps by Chefer et al.'s
# transformer attribution. Everything else as config/demo.py.
_base_ = ["./demo.py"]

network = "vit_tiny_patch16_224"
pretrained = False
model_kwargs = dict(img_size=96, patch_size=8, depth=6)  # 12 x 12 patches of 8 px, 6 blocks
session_name = "demo_vit_tiny"
crop_size = 96
resize_long = (112, 160)
channels_last = False
max_epoches = 30
warmup_epochs = 3
# ViTs from scratch train poorly with SGD; _delete_ drops the base's SGD-only keys (momentum)
optimizer = dict(_delete_=True, type="AdamW", lr=1e-3, weight_decay=0.05)
lr_scheduler = dict(type="MultiStepLR", milestones=[25], gamma=0.1)
cam_method = "transformer_attribution"
cam_flip = False                        # as the original ViT path: one pass, no flip
fignote = "ViT-Tiny, from scratch (demo)"
