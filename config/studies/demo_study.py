# The demo study (docs/STUDIES.md; bash run.sh study): 6 models on a small synthetic demo set, 3 map methods,
# cross-model consensus, OOD evaluation (a corruption and a generator shift), the cross-model report.
#   python scripts/run_study.py config/studies/demo_study.py
# Sized for 2 CPU cores: 320 training and 60 validation images of 112-144 px, 5 epochs (ViT: 15),
# no blob baseline, GridPG or sanity stages. Everything lands in work_dirs/demo_study/.
study_name = "demo_study"
# work_dir = "work_dirs/demo_study"      # default: work_dirs/<study_name>

# generated once, before any model (a "data" cell); its own folder, so run.sh's demo data is left alone
_root = "data/demo_study"
data = dict(demo_args=f"--out {_root} --train 320 --val 60 --seed 0 --min-side 112 --max-side 144")

# options of every model (then each model's own): the study's data, smaller inputs, fewer epochs,
# the raw (signed) maps stored beside the normalised ones so the consensus votes them (beyond-spec §2.1)
options = dict(
    list_root=_root, voc12_root=f"{_root}/VOC2012", gt_dir=f"{_root}/VOC2012/SegmentationClassAug",
    cls_label=f"{_root}/cls_labels.json", train_list=f"{_root}/train_aug.txt", val_list=f"{_root}/val.txt",
    infer_list=f"{_root}/val.txt", eval_list=f"{_root}/val.txt",
    num_workers=0, crop_size=112, resize_long=(112, 144), max_epoches=5, cam_store_raw=True, bootstrap=500,
)
_lite = dict(pretrained="lite_package", **{"lr_scheduler.milestones": [4]})
models = [
    dict(name="lite0", config="config/demo.py", options=dict(network="efficientnet_lite0", **_lite)),
    dict(name="lite1", config="config/demo.py", options=dict(network="efficientnet_lite1", **_lite)),
    dict(name="lite2", config="config/demo.py", options=dict(network="efficientnet_lite2", **_lite)),
    # Lite0 adversarially fine-tuned: PGD-L2, eps 0.5 in [0, 1] pixel units, 2 steps (step 2.5 eps / steps)
    dict(name="lite0_pgd", config="config/demo.py",
         options=dict(network="efficientnet_lite0", adv_train="pgd_l2", adv_eps=0.5, adv_steps=2, **_lite)),
    # a linear probe (BCE) on the frozen Lite0 (ImageNet weights); trained by scripts/train_probe.py
    dict(name="lite0_linear", config="config/demo.py",
         options=dict(network="efficientnet_lite0", pretrained="lite_package", probe="linear", probe_epochs=30,
                      probe_batch_size=32)),
    # ViT-Tiny from scratch (config/demo_vit.py), smaller: 64 px input, 8 x 8 patches of 8 px, 4 blocks
    dict(name="vit_tiny", config="config/demo_vit.py",
         options=["model_kwargs.img_size=64", "model_kwargs.depth=4", "crop_size=64", "resize_long=(64,96)",
                  "max_epoches=15", "warmup_epochs=2", "lr_scheduler.milestones=[12]"]),
    # an existing run joins as: dict(name="old_lite0", session="work_dirs/demo_efficientnet_lite0"),
]

# study method -> cam_method per family (CNNs, ViTs); a plain string applies to both. The first is each
# session's own method; the others run in the same session with map_tag=<method>.
methods = dict(
    cam=dict(cnn="cam", vit="transformer_attribution"),
    gradcam=dict(cnn="gradcam", vit="vit_gradcam"),
    gradient="gradient",
)

# stages of scripts/run_stages.py left out (the study reads none of their outputs)
skip_stages = ["blob_maps", "blob_curve", "gridpg", "sanity"]

consensus = dict(
    rule="l2",               # l2 (normalise, then average) | lime_printed | minmax (SmoothGrad)
    similarity=None,         # None: the rule's (cosine for l2 / lime_printed, rbf for minmax)
    source="auto",           # auto (the raw signed maps when every member stored them) | raw | maps
    sizes=None,              # sub-committee sizes (None: 2..m-1)
    trials=10,               # random sub-committees per size (all of them when fewer exist)
    seed=0,
    ap_pairs=60,             # (image, class) pairs on which sub-committee mAP is computed (None: all)
    swap=dict(evaluated=["lite0", "lite1", "lite2"], extra=(1, 3), trials=10),
    write_maps=True,         # the consensus as map files in consensus/<method>/maps/
)

ood = dict(
    source=dict(list=f"{_root}/val.txt", voc12_root=f"{_root}/VOC2012", cls_label=f"{_root}/cls_labels.json"),
    corruptions=["gaussian_noise"],   # also: gaussian_blur, contrast, jpeg
    severities=[3],
    seed=0,
    # the same val images with unseen colours and backgrounds (same layouts, masks and labels)
    shift=dict(demo_args=f"--out {_root}_shift --train 1 --val 60 --seed 0 --min-side 112 --max-side 144 "
                         "--hue-shift 120 --background stripes"),
)

# columns of the cross-model report (None: clean mAP, OOD mAP, ECE_ML, every explanation quantity per method)
metrics = None
report = dict(n_boot=2000, level=0.95, seed=0, primary_method="gradcam")

execution = dict(
    backend="local",         # local | submitit (SLURM job arrays)
    jobs=2,                  # cells at a time (0: GPUs, else cores // threads_per_cell)
    threads_per_cell=1,
    submitit=dict(timeout_min=120, slurm_partition="gpu", gpus_per_node=1, cpus_per_task=8),
)
