# Keys shared by every model. Model configs (resnet50.py, vision_transformer.py,
# demo.py) inherit these and override what differs. Any key can be overridden
# on the command line: --options key=value a.b=value (unknown keys are an error).
# ---------------------------------------------------------------- environment
num_workers = -1               # -1: half the CPU cores, at most 8
local_rank = 0
random_seed = 2022
deterministic = False          # torch deterministic algorithms (CPU resume tests use it)
device = "auto"                # auto | cpu | cuda | cuda:N
work_dir_root = "work_dirs"    # outputs go to <work_dir_root>/<session_name>/

# -------------------------------------------------------------------- dataset
dataset = "voc12"
list_root = "voc12"                      # bare list names (val.txt) are looked up here
voc12_root = "voc12/VOC2012"             # holds JPEGImages/, SegmentationClass(Aug)/
img_dir = "JPEGImages"
gt_dir = "voc12/VOC2012/SegmentationClassAug"
cls_label = "voc12/cls_labels.json"      # {name: [0-based class ids]}; a legacy .npy needs allow_pickle
allow_pickle = False                     # opt in to read the original's pickled files (warns)
train_list = "voc12/train_aug.txt"
val_list = "voc12/val.txt"
infer_list = "voc12/val.txt"
eval_list = "val.txt"
num_classes = 20

# ---------------------------------------------------------------------- model
network = "resnet50"            # any timm model name
pretrained = True               # True (timm hub) | False | path to a checkpoint | "lite0_package"
pretrain = None                 # original key: a checkpoint path; overrides `pretrained` when set
model_kwargs = dict()           # extra timm.create_model keyword arguments (drop_path_rate, ...)

# ---------------------------------------------------------------------- train
train_multi_scale = False       # original pipeline switch: run the training stage
finetune = False                # True: freeze the backbone, train only fc/classifier/head
finetune_bn = "train"           # with finetune: train (original: BN statistics adapt) | frozen (backbone kept in eval mode)
batch_size = 16
max_epoches = 20
max_steps_per_epoch = 0         # 0 = the whole epoch; >0 caps steps (demo, smoke runs)
warmup_epochs = 0
lr_warmup = "step"              # step (per optimizer step, decays count from epoch 0) | epoch (original: per epoch from lr 0, decay milestones count after the warmup)
crop_size = 224
resize_long = (448, 768)        # random long side, bicubic
color_jitter = dict(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
cut_p = 0.0                     # random erasing probability (0 = off)
cut_s = 0.25                    # random erasing: largest erased fraction of the crop
optimizer = dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=5e-4)
lr_scheduler = dict(type="MultiStepLR", milestones=[10, 15], gamma=0.1)
amp = False                     # True: bf16 autocast (CUDA or CPU); the original trains and validates in fp32
channels_last = True            # CNNs only
compile = False                 # torch.compile the model
resume = False                  # True: continue from model/last.pth; or a checkpoint path
adv_train = "none"              # none | pgd_l2 | pgd_linf (Madry: train on PGD examples) | advprop_l2 | advprop_linf (auxiliary BatchNorms)
adv_eps = 1.0                   # PGD radius in [0, 1] pixel units (e.g. L2 1.0, Linf 4/255)
adv_steps = 3                   # PGD steps
adv_step_size = None            # None: 2.5 * adv_eps / adv_steps
adv_random_start = True
adv_clean_loss = False          # pgd_*: average the clean and the adversarial loss
save_every_steps = 0            # >0: also write model/last.pth every N steps (mid-epoch resume)
log_interval = 20
val_drop_last = False           # True (original): best.pth is chosen on the first floor(N / batch_size) * batch_size val images
session_name = ""

# --------------------------------------------------------------------- probes
# A head trained on a frozen backbone (scripts/train_probe.py; docs/PROBES.md); "" = no probe.
probe = ""                      # linear | mlp2 | mlp3 | bcos_linear | bcos_mlp2 | bcos_mlp3
probe_hidden = 0                # MLP hidden width; 0 = the feature width
probe_loss = "bce"              # bce | ce (multi-label target y / sum(y))
probe_bce_off_value = 0.0       # BCE target of absent classes: 0.0 or "1/C" (the authors' code for B-cos heads)
probe_recipe = "adam"           # adam (paper: Adam 1e-3, warm-up + cosine) | sgd (authors' VOC code: lr 3 x 10 head factor)
probe_lr = None                 # None: the recipe's
probe_warmup_epochs = None      # None: the recipe's
probe_epochs = 50
probe_batch_size = 64
probe_augment = False           # True: recompute augmented features every step (slower, exact)
probe_cache = True              # cached float16 features of the frozen backbone (keyed by weights, input, list)
probe_cache_dir = ""            # "" = <work_dir_root>/feature_cache

# ----------------------------------------------------------------------- maps
gen_mask_for_multi_crop = False  # original pipeline switch: run the map stage
weights = "best.pth"
cam_method = "cam"              # CNN: cam | gradcam | gradcam++ | scorecam | layercam; ViT: transformer_attribution | rollout | attention_gradcam | vit_gradcam; both: gradient | input_x_gradient | integrated_gradients | smoothgrad | occlusion | rise | lime; CNN: guided_backprop | lrp; B-cos probe heads: bcos (docs/METHODS.md)
cam_scales = (1.0,)             # the original: scale 1.0 plus its flip
cam_flip = True
cam_classes = "gt"              # gt (original) | pred | all
cam_dtype = "float16"           # float16 | float32 in the .npz files
cam_batch_size = 8
cam_store_raw = False           # also store the signed, unnormalised map (key "raw" in the .npz; faithfulness/energy metrics)
attr_batch_size = 64            # input-space methods: network inputs per forward/backward (memory only)
perturbation_score = "prob"     # occlusion / rise / lime read the class probability (prob) or the logit (logit)
ig_steps = 50                   # integrated_gradients: Gauss-Legendre nodes
ig_baseline = "zero"            # integrated_gradients: zero (the normalised zero image, the mean colour) | black
smoothgrad_samples = 50
smoothgrad_sd = 0.15            # noise sd as a fraction of each image's (max - min)
occlusion_window = 32           # occlusion: window side and stride in pixels of the model input
occlusion_stride = 16
rise_masks = 4000               # RISE: N masks on an s x s grid, keep probability p (seeded, shared by all images)
rise_grid = 7
rise_p = 0.5
lime_samples = 1000             # LIME: samples over quickshift superpixels
lime_kernel_width = 0.25        # LIME: exponential kernel width on the cosine distance (the lime package's image default)
vit_map_protocol = "toolkit"    # ViTs: original (PIL resize to the input, relevance min-max at the input size, then to the image) | toolkit (tensor resize, stage normalisation at the image size)
overwrite = False               # redo finished map files
map_tag = ""                    # "" or a name: maps in test/cam_<list>_<weights>_<tag>/, metrics in eval/<list>_<weights>_<tag>/ (several methods side by side)

# ------------------------------------------------------- per-sample, ECE, VICE
loss_input = "center_crop"      # center_crop (original: 224 crop, zero padded) | full_image
pred_threshold = 0.5
ji_definition = "reference"     # reference (original: t=0.1, mean over non-zero IoUs) | paper (Eq. 6)
eval_thresh = 0.1               # background threshold for the per-image JI
ece_bins = 20
ece_binning = "width"           # width (paper) | count (equal-count bins)
vice_bins = 10                  # loss bins of the VICE figure
bootstrap = 2000
fignote = ""                    # figure label, e.g. ResNet-50

# ------------------------------------------------------- map quality beyond JI (docs/MAP_METRICS.md)
map_metrics = ("epg", "epg_box", "pg", "ap_mask", "gini")  # per image in the per-sample CSV; + insertion, deletion (need the network)
insdel_steps = 100              # insertion/deletion: S steps (S + 1 forward passes per image and class)
insdel_batch_size = 64          # insertion/deletion: perturbed inputs per forward pass (memory only)
pg_tolerance = 15.0             # pointing game: hit within this many pixels of the class
gridpg_grid = 2                 # GridPG (scripts/gridpg.py): 2 (2x2) | 3 (3x3) grids
gridpg_n_grids = 100
gridpg_min_conf = 0.95          # cells: single-class val images classified correctly with this confidence
gridpg_max_per_class = 100
gridpg_smooth = "mean5"         # mean5 (5x5 mean filter, the authors' code) | none
gridpg_seed = None              # None: random_seed
gridpg_batch_size = 4
gridpg_n_examples = 4
sanity_n_images = 32            # sanity checks (scripts/sanity_checks.py): fixed subset size
sanity_seed = None              # None: random_seed
sanity_tolerance = 0.1          # a metric whose relative change stays below this "barely moves"
sanity_n_examples = 3
