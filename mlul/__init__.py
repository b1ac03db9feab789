"""mlul: Multilingual Learn & UnLearn (see README.md)."""

import warnings

# peft calls a transformers method that transformers 5 deprecates; the notice means nothing to a user.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
