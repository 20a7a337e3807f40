"""Training (notebook 03_train): runtime (seeding, DDP), losses, batch augmentation, ``fit`` and Grad-CAM.
"""

from .gradcam import explain_run, grad_cam, plot_explanations
from .loop import fit
