#!/usr/bin/env python
"""Train and/or generate maps, as the original `run_transformer.py`.

    python run_transformer.py config/vision_transformer.py --options "train_multi_scale=True" "session_name=S"
    python run_transformer.py config/vision_transformer.py --options "gen_mask_for_multi_crop=True" "session_name=S" "weights=best.pth" "infer_list=val.txt"
"""
from dywsss.pipeline import main

if __name__ == "__main__":
    main(__doc__.splitlines()[0])
