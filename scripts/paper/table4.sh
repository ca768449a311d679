#!/usr/bin/env bash
# Table 4: fine-tuning only the classifier (fc for CNNs, head for ViTs; finetune=True) against full
# fine-tuning, for supervised and self-supervised initialisations. The full fine-tuning rows are the
# table3.sh runs (same session names): they are reused when finished.
source "$(dirname "$0")/common.sh"
need_data
P=$PRETRAINED_DIR
need_checkpoint "$P/resnet50_dino.pth" "$P/resnet50_mocov3.pth" "$P/vit_small_dino.pth" "$P/vit_small_mocov3.pth"
for ft in full fc; do
  # the full fine-tuning runs pass no finetune option, so their commands equal table3.sh's
  if [ $ft = fc ]; then opt=(finetune=True); tag=_fc; htag=_head; else opt=(); tag=; htag=; fi
  cnn resnet50 "PyTorch_pretrain$tag" "${opt[@]}" fignote="ResNet-50$tag"
  cnn resnet50 "dino_pretrain$tag"    "${opt[@]}" "pretrained=$P/resnet50_dino.pth"   fignote="ResNet-50-DINO$tag"
  cnn resnet50 "mocov3_pretrain$tag"  "${opt[@]}" "pretrained=$P/resnet50_mocov3.pth" fignote="ResNet-50-MoCov3$tag"
  vit vit_small_patch16_224 "timm_pretrain$htag"   "${opt[@]}" fignote="ViT-Small$htag"
  vit vit_small_patch16_224 "dino_pretrain$htag"   "${opt[@]}" "pretrained=$P/vit_small_dino.pth"   fignote="ViT-Small-DINO$htag"
  vit vit_small_patch16_224 "mocov3_pretrain$htag" "${opt[@]}" "pretrained=$P/vit_small_mocov3.pth" fignote="ViT-Small-MoCov3$htag"
done
table table4
