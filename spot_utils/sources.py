"""`python -m spot_utils.sources`: fetch the offline corpora (spot_utils.data.sources)."""
from .data.sources import main

if __name__ == "__main__":
    main()
