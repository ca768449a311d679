# A probe on the frozen demo backbone (EfficientNet-Lite0, offline ImageNet weights):
#   python scripts/train_probe.py config/probe_demo.py --options probe=mlp2 probe_loss=ce session_name=S
# The probe keys and their meaning are in config/_base_.py and docs/PROBES.md.
_base_ = ["./demo.py"]

session_name = "demo_probe_linear_bce"
probe = "linear"
probe_epochs = 30
probe_batch_size = 32
