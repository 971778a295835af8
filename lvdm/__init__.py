"""The LVDM model library: pure PyTorch + einops, usable in a notebook with torch alone.

No Ray, no MLflow, no knowledge of the pipeline's file layout lives here.
"""
