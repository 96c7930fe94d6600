"""`python -m spot_utils.distributed` / `torchrun -m spot_utils.distributed`: stage 01 over several processes
(spot_utils.experiment.distributed)."""
from .experiment.distributed import main

if __name__ == "__main__":
    main()
