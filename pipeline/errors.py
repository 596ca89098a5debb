"""Reason codes for inputs that produce no samples.

Every failure ends as an ErrorRow with one of these codes; `build --retry-errors` reruns
only the inputs whose code is in RETRYABLE (the ones a later attempt can plausibly fix).
"""

REASONS = {
    # stage 1: reading the URL list
    "bad_row": "the row has no usable URL",
    "bad_scheme": "the URL's scheme is not allowed (only http/https unless the config allows local files)",
    # stage 2: download
    "http_4xx": "the server answered with a client error (404, 403, ...)",
    "http_throttled": "the server answered 408 or 429",
    "http_5xx": "the server answered with a server error after all retries",
    "connect_error": "the connection failed or was reset after all retries",
    "timeout": "the server stalled past the read timeout or the download deadline",
    "too_many_redirects": "more redirects than the configured limit",
    "too_large": "the body is larger than the byte cap",
    "truncated": "the body is shorter than its Content-Length",
    "not_media": "the body is not a video file (HTML page, random bytes, unknown container)",
    "ytdlp_error": "yt-dlp could not fetch the video",
    # stage 3: probe
    "no_video": "the file has no video stream",
    "no_audio": "the file has no audio stream",
    "duration_out_of_range": "the duration is outside the configured bounds",
    # stages 4-5: audio and ASR
    "audio_error": "ffmpeg could not decode the audio",
    "asr_error": "faster-whisper failed on the audio",
    "no_speech": "no speech was found (silent or music only)",
    "language_not_allowed": "the detected language is not in the allowed list",
    # stages 6-7: segment and clip
    "too_few_units": "the transcript has fewer consecutive units than one sample needs",
    "clip_error": "ffmpeg failed to cut a clip",
    # the engine
    "deadline": "the per-video wall-clock deadline passed",
    "worker_died": "the worker process died and Ray's retries ran out",
    "internal_error": "an unexpected exception (a bug: please report it)",
}

RETRYABLE = {"http_throttled", "http_5xx", "connect_error", "timeout", "truncated", "deadline", "worker_died"}


class StageError(Exception):
    """Raised by a stage for a bad input: the engine turns it into an ErrorRow."""

    def __init__(self, stage: str, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(f"{stage}/{reason}: {message}")
        self.stage = stage
        self.reason = reason
        self.message = message
