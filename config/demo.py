# The built-in demo: a small synthetic VOC-layout set (scripts/make_demo_voc.py),
# EfficientNet-Lite0 with the offline ImageNet weights, a few CPU minutes.
_base_ = ["./_base_.py"]

list_root = "data/demo"
voc12_root = "data/demo/VOC2012"
gt_dir = "data/demo/VOC2012/SegmentationClassAug"
cls_label = "data/demo/cls_labels.json"
train_list = "data/demo/train_aug.txt"
val_list = "data/demo/val.txt"
infer_list = "data/demo/val.txt"
eval_list = "data/demo/val.txt"

network = "efficientnet_lite0"
pretrained = "lite0_package"
session_name = "demo_efficientnet_lite0"
num_workers = 2
batch_size = 16
max_epoches = 6
crop_size = 160
resize_long = (192, 256)
optimizer = dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=5e-4)
lr_scheduler = dict(type="MultiStepLR", milestones=[5], gamma=0.1)
bootstrap = 1000
fignote = "EfficientNet-Lite0 (demo)"
