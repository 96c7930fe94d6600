"""The module `spot_utils.runs` of earlier versions: run folders and tensor files, now spot_utils.base.run_files."""
from .base.run_files import *  # noqa: F401,F403 (the public names of the module it was)
