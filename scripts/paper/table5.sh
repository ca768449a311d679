#!/usr/bin/env bash
# Table 5: regularisation. Weight decay on (5e-4, the default) / off (optimizer.weight_decay=0) and
# random erasing off / on (cut_p, cut_s), for ResNet-50 and ViT-Small with ImageNet-1k weights.
source "$(dirname "$0")/common.sh"
need_data
CUT_P=${CUT_P:-0.5}     # probability of erasing a crop
CUT_S=${CUT_S:-0.25}    # largest erased fraction of the crop
for arch in cnn vit; do
  if [ $arch = cnn ]; then net=resnet50; tag=PyTorch_pretrain; name=ResNet-50
  else net=vit_small_patch16_224; tag=timm_pretrain; name=ViT-Small; fi
  $arch $net "$tag"          fignote="$name"
  $arch $net "${tag}_nowd"   optimizer.weight_decay=0 fignote="$name-noWD"
  $arch $net "${tag}_erase"  cut_p=$CUT_P cut_s=$CUT_S fignote="$name-RE"
done
table table5
