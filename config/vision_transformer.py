# ViT-Small as in the original README (any timm ViT via network=...).
_base_ = ["./_base_.py"]

network = "vit_small_patch16_224"
warmup_epochs = 5
channels_last = False
cam_method = "transformer_attribution"
cam_flip = False                # the original ViT path: one 224x224 pass, no flip
