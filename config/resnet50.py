# ResNet-50 as in the original README (any timm CNN via network=...), with the original
# code's recipe (issue 10): GradualWarmupScheduler(total_epoch=5) around MultiStepLR([10, 15]),
# stepped per epoch (lr per epoch: 0, .2L, .4L, .6L, .8L, L x 11, .1L x 4), fp32, best.pth on
# the first 1440 of the 1449 val images (drop_last with batch 16), BN statistics adapting in
# fc-only fine-tuning. `recipe` in every output names what deviates from this.
_base_ = ["./_base_.py"]

network = "resnet50"
cam_method = "cam"
warmup_epochs = 5
lr_warmup = "epoch"
finetune_bn = "train"
amp = False
val_drop_last = True
