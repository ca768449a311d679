# ResNet-50 as in the original README (any timm CNN via network=...).
_base_ = ["./_base_.py"]

network = "resnet50"
cam_method = "cam"
