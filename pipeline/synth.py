"""Synthetic test media with KNOWN speech and KNOWN on-screen content, made offline.

Tests of the ASR + clip-cutting pipeline need ground truth: which words are said, and
exactly when. espeak-ng speaks fixed sentences; the screen shows one solid colour per
sentence for exactly the span it is audible, so a test can check both the transcript and
the cut points (a frame's mean colour tells which sentence it belongs to).
Only stdlib + numpy here; ffmpeg and espeak-ng are external programs.
"""
from __future__ import annotations

import functools
import http.server
import json
import math
import os
import random
import subprocess
import tempfile
import threading
import wave
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

SR = 16000  # audio rate of every track we build: what whisper wants, and 16000/25 = 640 samples per frame

# Plain, common words; no names, numbers or colour words, so a tiny.en model transcribes
# espeak's voice reliably and a transcript never gets confused with the colour labels.
SENTENCES: list[str] = [
    "The old man walked slowly down the road to the small house.",
    "She opened the window and let the cool morning air come in.",
    "We should take the dog for a long walk after our dinner.",
    "The children played outside in the garden until it started to rain.",
    "Please put the heavy book back on the shelf by the door.",
    "My brother likes to read the newspaper with his morning coffee.",
    "The train was late again so we waited on the cold platform.",
    "Fresh bread from the bakery smells wonderful early in the day.",
    "The teacher asked everyone to write a short story about summer.",
    "He forgot his coat and got very wet on the way home.",
    "The bird sang a lovely song from high up in the tree.",
    "We cooked a simple dinner of rice and vegetables last night.",
    "The river runs quietly through the valley toward the distant sea.",
    "Please remember to turn off the lights when you leave the room.",
    "The market was busy with people buying fruit and fresh fish.",
    "She wrote a long letter to her friend who lives far away.",
    "The cat slept all afternoon in a warm patch of sunlight.",
    "Our neighbors planted flowers along the fence in early spring.",
    "The wind blew the dry leaves across the empty parking lot.",
    "They listened to music while they cleaned the whole kitchen.",
]

# Far apart in RGB so that even after yuv420p/H.264 rounding the nearest one is unambiguous.
COLOURS: list[tuple[str, tuple[int, int, int]]] = [
    ("red", (230, 20, 20)),
    ("green", (20, 200, 20)),
    ("blue", (20, 20, 230)),
    ("yellow", (240, 240, 20)),
    ("magenta", (230, 20, 230)),
    ("cyan", (20, 230, 230)),
    ("white", (245, 245, 245)),
    ("orange", (250, 140, 0)),
]
PAUSE: tuple[int, int, int] = (40, 40, 40)  # dark gray between sentences (and before/after)


@dataclass
class Spoken:
    text: str
    start: float  # seconds into the output where audible speech begins (espeak's silence trimmed)
    end: float  # seconds where audible speech ends
    colour: str  # colour name on screen during [start, end)
    rgb: tuple[int, int, int]


def _ffmpeg(args: list[str], stdin=None) -> subprocess.Popen | None:
    """Run ffmpeg quietly; with stdin=PIPE return the process for the caller to feed."""
    # -nostdin only turns off keyboard control; ffmpeg still reads "pipe:0" input.
    cmd = ["ffmpeg", "-nostdin", "-y", "-v", "error", *args]
    if stdin is None:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
        if p.returncode != 0:
            raise RuntimeError(f"ffmpeg failed: {p.stderr.decode(errors='replace')[-2000:]}")
        return None
    # stderr to a file, not a pipe: we write frames for a long time and must not deadlock on it.
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err)
    proc.errfile = err  # type: ignore[attr-defined]
    return proc


@functools.lru_cache(maxsize=256)
def _speech(text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng speech as int16 mono at SR with leading/trailing silence cut off.

    Cached per process: a corpus reuses the same few sentences across many videos.
    """
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = os.path.join(tmp, "s.wav")
        # Text goes through stdin so nothing in it can be read as an option.
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", wav_path, "--stdin"],
                       input=text.encode(), check=True, capture_output=True)
        with wave.open(wav_path, "rb") as w:
            rate, nch = w.getframerate(), w.getnchannels()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    if nch > 1:
        x = x.reshape(-1, nch).mean(axis=1)
    # Audible = above 2% of full scale; keeps the timing of the first/last phoneme honest.
    loud = np.flatnonzero(np.abs(x) > 0.02 * 32768)
    if loud.size == 0:
        raise ValueError(f"espeak-ng produced no audible speech for {text!r}")
    x = x[loud[0]:loud[-1] + 1]
    n_out = max(1, round(len(x) * SR / rate))
    # Linear interpolation is enough for test speech (espeak has little energy above 8 kHz).
    y = np.interp(np.arange(n_out) * (rate / SR), np.arange(len(x)), x)
    y = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    y.setflags(write=False)  # shared through the cache
    return y


def _write_wav(path: str, samples: np.ndarray) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(samples.astype("<i2").tobytes())


def _encode(path: str, audio: np.ndarray, frame_rgb: list[tuple[int, int, int]],
            size: tuple[int, int], fps: int) -> None:
    """Mux raw RGB frames (one colour per frame, piped) with a 16 kHz mono track into H.264+AAC mp4."""
    w, h = size
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = os.path.join(tmp, "a.wav")
        _write_wav(wav_path, audio)
        proc = _ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(fps),
                        "-i", "pipe:0", "-i", wav_path,
                        "-map", "0:v", "-map", "1:a",
                        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-ac", "1", "-ar", str(SR), "-b:a", "64k",
                        "-movflags", "+faststart", os.fspath(path)], stdin=subprocess.PIPE)
        frames: dict[tuple[int, int, int], bytes] = {}  # one prebuilt frame per colour
        try:
            for rgb in frame_rgb:
                if rgb not in frames:
                    frames[rgb] = np.full((h, w, 3), rgb, dtype=np.uint8).tobytes()
                proc.stdin.write(frames[rgb])
        except BrokenPipeError:
            pass  # ffmpeg died; its error is reported below
        finally:
            proc.stdin.close()
        rc = proc.wait()
        if rc != 0:
            proc.errfile.seek(0)
            raise RuntimeError(f"ffmpeg failed: {proc.errfile.read().decode(errors='replace')[-2000:]}")
        proc.errfile.close()


def make_narrated_video(path, sentences: list[str], *, pause_s: float = 1.2, lead_s: float = 0.6,
                        size: tuple[int, int] = (320, 240), fps: int = 25, voice: str = "en-us",
                        speed: int = 150, seed: int = 0) -> list[Spoken]:
    """Speak `sentences` one after another over solid colour screens; return exact timings.

    Layout: lead_s silence, sentence 1, pause_s, sentence 2, ..., pause_s (padded up to a
    whole frame so the audio and video streams have the same length). Sentence i is shown
    as COLOURS[i % len(COLOURS)] for exactly its audible span; PAUSE colour otherwise.
    `seed` is accepted for symmetry with make_corpus; the output does not depend on it.
    """
    if SR % fps:
        raise ValueError(f"fps must divide {SR} so frames and samples line up")
    pieces = [np.zeros(round(lead_s * SR), np.int16)]
    spoken: list[Spoken] = []
    pos = len(pieces[0])  # in samples, so start/end are exact multiples of 1/SR
    for i, text in enumerate(sentences):
        speech = _speech(text, voice, speed)
        name, rgb = COLOURS[i % len(COLOURS)]
        spoken.append(Spoken(text, pos / SR, (pos + len(speech)) / SR, name, rgb))
        pause = np.zeros(round(pause_s * SR), np.int16)
        pieces += [speech, pause]
        pos += len(speech) + len(pause)
    spf = SR // fps
    n_frames = max(1, math.ceil(pos / spf))
    pieces.append(np.zeros(n_frames * spf - pos, np.int16))
    audio = np.concatenate(pieces)

    # Frame n is displayed at time n/fps; it shows the sentence active at that instant.
    frame_rgb = []
    for n in range(n_frames):
        t = n / fps
        frame_rgb.append(next((s.rgb for s in spoken if s.start <= t < s.end), PAUSE))
    _encode(path, audio, frame_rgb, size, fps)
    return spoken


def make_silent_video(path, duration_s: float = 6.0, size: tuple[int, int] = (320, 240), fps: int = 25) -> None:
    """Same kind of mp4 as make_narrated_video, but the audio track is pure digital silence."""
    n_frames = max(1, round(duration_s * fps))
    _encode(path, np.zeros(n_frames * (SR // fps), np.int16), [PAUSE] * n_frames, size, fps)


def make_video_without_audio(path, duration_s: float = 4.0, size: tuple[int, int] = (320, 240),
                             fps: int = 25) -> None:
    """An mp4 with a video stream only (for the 'no audio track' path)."""
    w, h = size
    _ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}:duration={duration_s}",
             "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-an", os.fspath(path)])


def make_corpus(out_dir, n_videos: int, sentences_per_video: int = 8, seed: int = 0) -> dict[str, list[Spoken]]:
    """Write video_000.mp4 ... plus truth.json; each video a different seeded pick of SENTENCES."""
    os.makedirs(out_dir, exist_ok=True)
    k = min(sentences_per_video, len(SENTENCES))
    truth: dict[str, list[Spoken]] = {}
    for i in range(n_videos):
        rng = random.Random(f"synth:{seed}:{i}")  # str seeds are stable across runs/processes
        picked = rng.sample(SENTENCES, k)
        name = f"video_{i:03d}.mp4"
        truth[name] = make_narrated_video(os.path.join(out_dir, name), picked, seed=seed)
    with open(os.path.join(out_dir, "truth.json"), "w") as f:
        json.dump({k_: [asdict(s) for s in v] for k_, v in truth.items()}, f, indent=1)
    return truth


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean


def serve_directory(directory, host: str = "127.0.0.1") -> tuple[str, Callable[[], None]]:
    """Serve `directory` over HTTP on a free port in a daemon thread; return (base_url, stop)."""
    handler = functools.partial(_QuietHandler, directory=os.fspath(directory))
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="synth-http", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://{host}:{server.server_address[1]}", stop


def nearest_colour(rgb_mean) -> str:
    """Name of the COLOURS entry closest to an (R, G, B) mean, or "pause" for the PAUSE colour."""
    x = np.asarray(rgb_mean, dtype=np.float64)[:3]
    best = min([*COLOURS, ("pause", PAUSE)], key=lambda c: float(np.sum((x - np.array(c[1])) ** 2)))
    return best[0]
