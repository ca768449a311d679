# The demo study (docs/STUDIES.md): 6 models on the synthetic demo set, 3 map methods,
# cross-model consensus, OOD evaluation (corruptions + a generator shift), the cross-model report.
#   python scripts/run_study.py config/studies/demo_study.py        (bash run.sh study)
# Needs keys the training work adds: pretrained="lite_package" (offline Lite0/1/2 weights),
# adv_train / adv_eps / adv_steps (PGD fine-tuning), probe="linear" (a linear probe).
study_name = "demo_study"
# work_dir = "work_dirs/demo_study"      # default: work_dirs/<study_name>

# generated once, before any model (a "data" cell); the same arguments as run.sh's demo
data = dict(demo_args="--out data/demo --train 480 --val 120 --seed 0 --min-side 160 --max-side 256")

_lite = dict(pretrained="lite_package")
models = [
    dict(name="lite0", config="config/demo.py", options=dict(network="efficientnet_lite0", **_lite)),
    dict(name="lite1", config="config/demo.py", options=dict(network="efficientnet_lite1", **_lite)),
    dict(name="lite2", config="config/demo.py", options=dict(network="efficientnet_lite2", **_lite)),
    # Lite0 adversarially fine-tuned: PGD-L2, eps 0.5 in [0, 1] pixel units, 2 steps (step 2.5 eps / steps)
    dict(name="lite0_pgd", config="config/demo.py",
         options=dict(network="efficientnet_lite0", adv_train="pgd_l2", adv_eps=0.5, adv_steps=2, **_lite)),
    # Lite0 frozen, a linear probe on its features
    dict(name="lite0_probe", config="config/demo.py",
         options=dict(network="efficientnet_lite0", probe="linear", **_lite)),
    # ViT-Tiny from scratch (config/demo_vit.py)
    dict(name="vit_tiny", config="config/demo_vit.py"),
    # an existing run joins as: dict(name="old_lite0", session="work_dirs/demo_efficientnet_lite0"),
]

# study method -> cam_method per family (CNNs, ViTs); a plain string applies to both
methods = dict(
    cam=dict(cnn="cam", vit="transformer_attribution"),
    gradcam=dict(cnn="gradcam", vit="vit_gradcam"),
    gradient="gradient",
)

consensus = dict(
    rule="l2",               # l2 (normalise, then average) | lime_printed | minmax (SmoothGrad)
    similarity=None,         # None: the rule's (cosine for l2 / lime_printed, rbf for minmax)
    sizes=None,              # sub-committee sizes (None: 2..m-1)
    trials=10,               # random sub-committees per size (all of them when fewer exist)
    seed=0,
    ap_pairs=60,             # (image, class) pairs on which sub-committee mAP is computed (None: all)
    swap=dict(evaluated=["lite0", "lite1", "lite2"], extra=(1, 3), trials=10),
    write_maps=True,         # the consensus as map files in consensus/<method>/maps/
)

ood = dict(
    source=dict(list="data/demo/val.txt", voc12_root="data/demo/VOC2012", cls_label="data/demo/cls_labels.json"),
    corruptions=["gaussian_noise", "contrast"],   # also: gaussian_blur, jpeg
    severities=[3],
    seed=0,
    # the same val images with unseen colours and backgrounds (same layouts, masks and labels)
    shift=dict(demo_args="--out data/demo_shift --train 1 --val 120 --seed 0 --min-side 160 --max-side 256 "
                         "--hue-shift 120 --background stripes"),
)

# columns of the cross-model report (None: clean mAP, OOD mAP, ECE_ML, every map metric per method)
metrics = None
report = dict(n_boot=2000, level=0.95, seed=0, primary_method="gradcam")

execution = dict(
    backend="local",         # local | submitit (SLURM job arrays)
    jobs=0,                  # cells at a time (0: GPUs, else cores // threads_per_cell)
    threads_per_cell=2,
    submitit=dict(timeout_min=120, slurm_partition="gpu", gpus_per_node=1, cpus_per_task=8),
)
