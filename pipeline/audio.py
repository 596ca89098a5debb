"""Stage 4: decode the first audio stream to 16 kHz mono PCM, in memory (what Whisper eats)."""
from __future__ import annotations

import numpy as np

from pipeline import ff
from pipeline.errors import StageError

SAMPLE_RATE = 16_000


def extract_audio(path: str, timeout: float = 600.0) -> np.ndarray:
    """int16 samples (half the bytes of float32 on their way to the ASR actor)."""
    out = ff.run(["ffmpeg", "-nostdin", "-v", "error", *ff.safe_input(path), "-map", "0:a:0",
                  "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"],
                 timeout=timeout, stage="audio", reason="audio_error")
    if len(out) < 2 * SAMPLE_RATE // 10:
        raise StageError("audio", "audio_error", f"only {len(out) // 2} audio samples decoded")
    return np.frombuffer(out, dtype=np.int16)
