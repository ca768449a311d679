"""Paper metrics: JI (Eq. 6) and its curve, loss (Eq. 7), ECE_ML (Eq. 1-4), VICE (Eq. 8), mAP."""
from .calibration import (
    ECEResult, bin_index, ece_ml, ece_ml_from_probs, ml_accuracy, ml_confidence, prediction_sets,
)
from .classification import (
    average_precision, binary_entropy, mean_average_precision, mean_ml_accuracy, per_sample_loss, sigmoid,
)
from .per_sample import (
    PER_SAMPLE_COLUMNS, PROB_COLUMNS, ids_to_multi_hot, parse_ids, per_image_ji, per_sample_table,
    read_per_sample_csv, write_per_sample_csv,
)
from .segmentation import (
    JI_DEFINITIONS, SEG_CLASS_NAMES, JICurve, confusion_from_histogram, confusion_matrix, dataset_ji_curve,
    default_thresholds, image_confusions, image_ji, image_threshold_histogram, iou_from_confusion,
    maps_to_mask, per_image_ji_from_confusions,
)
from .vice import VICEResult, bootstrap_ci, loss_bins, vice, vice_coefficient

__all__ = [
    "ECEResult", "bin_index", "ece_ml", "ece_ml_from_probs", "ml_accuracy", "ml_confidence", "prediction_sets",
    "average_precision", "binary_entropy", "mean_average_precision", "mean_ml_accuracy", "per_sample_loss",
    "sigmoid", "PER_SAMPLE_COLUMNS", "PROB_COLUMNS", "ids_to_multi_hot", "parse_ids", "per_image_ji",
    "per_sample_table", "read_per_sample_csv", "write_per_sample_csv", "JI_DEFINITIONS", "SEG_CLASS_NAMES",
    "JICurve", "confusion_from_histogram", "confusion_matrix", "dataset_ji_curve", "default_thresholds",
    "image_confusions", "image_ji", "image_threshold_histogram", "iou_from_confusion", "maps_to_mask",
    "per_image_ji_from_confusions", "VICEResult", "bootstrap_ci", "loss_bins", "vice", "vice_coefficient",
]
