# The built-in demo's transformer: timm ViT-Tiny trained from scratch on the
# synthetic demo set (no weights to download), maps by Chefer et al.'s
# transformer attribution. Everything else as config/demo.py.
_base_ = ["./demo.py"]

network = "vit_tiny_patch16_224"
pretrained = False
model_kwargs = dict(img_size=128)       # 8 x 8 patches of 16 px
session_name = "demo_vit_tiny"
crop_size = 128
resize_long = (160, 224)
channels_last = False
max_epoches = 6
warmup_epochs = 1
# ViTs from scratch train poorly with SGD; _delete_ drops the base's SGD-only keys (momentum)
optimizer = dict(_delete_=True, type="AdamW", lr=1e-3, weight_decay=0.05)
lr_scheduler = dict(type="MultiStepLR", milestones=[5], gamma=0.1)
cam_method = "transformer_attribution"
cam_flip = False                        # as the original ViT path: one pass, no flip
fignote = "ViT-Tiny, from scratch (demo)"
