# ViT-Small as in the original README (any timm ViT via network=...), with the original
# code's recipe and map protocol (issue 10): epoch-wise warmup (5) around MultiStepLR([10, 15]),
# fp32, best.pth on the first 1440 val images, BN/LN statistics adapting in head-only
# fine-tuning; maps by Chefer's transformer attribution on the PIL-resized 224x224 image,
# relevance min-max normalised at 224 then resized to the image (no flip).
_base_ = ["./_base_.py"]

network = "vit_small_patch16_224"
warmup_epochs = 5
lr_warmup = "epoch"
finetune_bn = "train"
amp = False
val_drop_last = True
channels_last = False
cam_method = "transformer_attribution"
cam_flip = False                # the original ViT path: one 224x224 pass, no flip
vit_map_protocol = "original"
