"""Attribution methods, registered by name and picked by the ``cam_method`` config key."""
from ..registry import Registry

EXPLAINERS: Registry = Registry("attribution method")
