#!/usr/bin/env bash
# Table 3: pre-training schemes. Supervised ImageNet-1k (timm) against self-supervised backbones
# loaded from local checkpoints (classifier missing; pretrained=/path): BYOL, DINO, MoCo v3 on
# ImageNet, and MoCo v3 pre-trained on VOC2012Aug. All fully fine-tuned.
source "$(dirname "$0")/common.sh"
need_data
P=$PRETRAINED_DIR
need_checkpoint "$P/resnet50_byol.pth" "$P/resnet50_dino.pth" "$P/resnet50_mocov3.pth" \
  "$P/resnet50_mocov3_voc12aug.pth" "$P/vit_small_dino.pth" "$P/vit_small_mocov3.pth"
cnn resnet50 PyTorch_pretrain         fignote=ResNet-50
cnn resnet50 byol_pretrain            "pretrained=$P/resnet50_byol.pth"            fignote=ResNet-50-BYOL
cnn resnet50 dino_pretrain            "pretrained=$P/resnet50_dino.pth"            fignote=ResNet-50-DINO
cnn resnet50 mocov3_pretrain          "pretrained=$P/resnet50_mocov3.pth"          fignote=ResNet-50-MoCov3
cnn resnet50 mocov3_voc12aug_pretrain "pretrained=$P/resnet50_mocov3_voc12aug.pth" fignote=ResNet-50-MoCov3-VOC
vit vit_small_patch16_224 timm_pretrain   fignote=ViT-Small
vit vit_small_patch16_224 dino_pretrain   "pretrained=$P/vit_small_dino.pth"   fignote=ViT-Small-DINO
vit vit_small_patch16_224 mocov3_pretrain "pretrained=$P/vit_small_mocov3.pth" fignote=ViT-Small-MoCov3
table table3
