#!/usr/bin/env bash
# Table 1: architectures with timm's default ImageNet weights, fully fine-tuned on VOC2012Aug.
# CNNs: ImageNet-1k supervised. ViTs: timm's default vit_*_patch16_224 weights are ImageNet-21k
# pre-trained and ImageNet-1k fine-tuned (augreg), as the original code used.
# ViTs run twice: at lr 0.1, what the original's README command actually trains with (it sets no
# optimizer.lr, so the config default 0.1 applies), and at lr 0.01, what its session name says.
source "$(dirname "$0")/common.sh"
need_data
cnn resnet18   PyTorch_pretrain fignote=ResNet-18
cnn resnet34   PyTorch_pretrain fignote=ResNet-34
cnn resnet50   PyTorch_pretrain fignote=ResNet-50
cnn resnest50d timm_pretrain    fignote=ResNeSt-50
LR=0.1  vit vit_small_patch16_224 timm_pretrain fignote=ViT-Small
LR=0.1  vit vit_base_patch16_224  timm_pretrain fignote=ViT-Base
LR=0.01 vit vit_small_patch16_224 timm_pretrain fignote="ViT-Small (lr 0.01)"
LR=0.01 vit vit_base_patch16_224  timm_pretrain fignote="ViT-Base (lr 0.01)"
table table1
