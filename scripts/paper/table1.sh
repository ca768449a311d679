#!/usr/bin/env bash
# Table 1: architectures with ImageNet-1k supervised weights (timm), fully fine-tuned on VOC2012Aug.
source "$(dirname "$0")/common.sh"
need_data
cnn resnet18   PyTorch_pretrain fignote=ResNet-18
cnn resnet34   PyTorch_pretrain fignote=ResNet-34
cnn resnet50   PyTorch_pretrain fignote=ResNet-50
cnn resnest50d timm_pretrain    fignote=ResNeSt-50
vit vit_small_patch16_224 timm_pretrain fignote=ViT-Small
vit vit_base_patch16_224  timm_pretrain fignote=ViT-Base
table table1
