#!/usr/bin/env bash
# Table 2: CNN families and depths (ResNet, Res2Net, ResNeSt, EfficientNet), ImageNet-1k weights.
# Runs shared with table1.sh (same session names) are reused, not retrained.
source "$(dirname "$0")/common.sh"
need_data
cnn resnet18          PyTorch_pretrain fignote=ResNet-18
cnn resnet34          PyTorch_pretrain fignote=ResNet-34
cnn resnet50          PyTorch_pretrain fignote=ResNet-50
cnn res2net50_26w_4s  timm_pretrain    fignote=Res2Net-50
cnn resnest14d        timm_pretrain    fignote=ResNeSt-14
cnn resnest26d        timm_pretrain    fignote=ResNeSt-26
cnn resnest50d        timm_pretrain    fignote=ResNeSt-50
cnn resnest101e       timm_pretrain    fignote=ResNeSt-101
cnn efficientnet_b4   timm_pretrain    fignote=EfficientNet-b4
table table2
