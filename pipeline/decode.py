"""Video decoding for the loader: which frames a sample needs, the backends that decode them, and
the crop/resize that follows.

Backends (LoaderConfig.decoder / decode_device), one signature:

    decode(data: bytes, pick, *, threads, device) -> (indices, frames)

`pick(fps, n_frames) -> list[int]` is the frame choice (the loader passes a `frame_indices`
call), so every backend decodes exactly the frames the same call picks; `frames` is a uint8
tensor [N, H, W, 3] on `device`, the layout `crop_resize` takes. Any failure to read the mp4
becomes BadSample("bad_video", ...).

    decord      CPU only (the default). decord's GPU path needs a source build.
    torchcodec  CPU, or CUDA through NVDEC (device "cuda"/"cuda:N"). Imported only when chosen:
                the PyPI wheels are CUDA builds (they need libtorch_cuda and libnvrtc), so a
                CPU-only torch needs the CPU wheel from the PyTorch index.

Both read the frame rate from the stream header (decord's get_avg_fps; torchcodec's
average_fps_from_header) so that the same clip gives the same indices. Pixels differ a little:
the YUV->RGB conversions are not the same code (NVDEC's is not bit-exact by design).
"""
from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Pick = Callable[[float, int], list]     # (fps, frame count) -> frame indices


class BadSample(Exception):
    """A sample that cannot be used; `reason` is a short stable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def frame_indices(spans: list[tuple[float, float]], fps: float, n_frames: int, per_unit: int,
                  rng: np.random.Generator | None = None) -> list[int]:
    """per_unit frame numbers inside each (start, end) span, in time order.

    The span is cut into per_unit equal bins; one instant per bin: its centre (rng None, eval)
    or a uniform draw (training). Frame n shows [n/fps, (n+1)/fps), so the frame at instant t
    is floor(t * fps), clamped to frames that start inside the span and exist in the file.
    """
    out: list[int] = []
    for start, end in spans:
        end = max(end, start)
        u = np.full(per_unit, 0.5) if rng is None else rng.random(per_unit)
        t = start + (np.arange(per_unit) + u) * (end - start) / per_unit
        lo = math.ceil(start * fps - 1e-6)
        hi = max(lo, math.ceil(end * fps - 1e-6) - 1)
        idx = np.clip(np.floor(t * fps + 1e-9).astype(np.int64), lo, hi)
        out += np.clip(idx, 0, n_frames - 1).tolist()
    return out


def crop_resize(frames, size: int, rng: np.random.Generator, train: bool,
                crop_scale: float = 224 / 268, flip: bool = True) -> torch.Tensor:
    """[T, H, W, 3] uint8 (tensor on any device, or numpy) -> [T, 3, size, size] uint8 on the
    same device (maybe a non-contiguous view).

    Crop first, then resize only the crop (cheaper than resizing whole frames): a centre
    square of the short side when evaluating; when training a random square of
    crop_scale x the short side, and a coin-flip mirror. One crop for all frames of a sample.
    """
    frames = torch.as_tensor(frames)
    _, h, w, _ = frames.shape
    short = min(h, w)
    if train:
        c = max(1, round(short * crop_scale))
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        mirror = flip and rng.random() < 0.5
    else:
        c, mirror = short, False
        y, x = (h - c) // 2, (w - c) // 2
    out = frames[:, y:y + c, x:x + c].permute(0, 3, 1, 2)
    if c != size:
        if out.is_cuda:   # CUDA's antialiased resize has no uint8 kernel; the CPU one does
            out = F.interpolate(out.float(), size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        else:
            out = F.interpolate(out, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.flip(-1) if mirror else out


def _bad_video(e: Exception) -> BadSample:
    return BadSample("bad_video", str(e).splitlines()[0][:200] if str(e) else type(e).__name__)


def decode_decord(data: bytes, pick: Pick, *, threads: int = 1, device: str = "cpu"):
    """decord, CPU. `device` is there for the common signature; only "cpu" is valid."""
    import decord
    try:
        vr = decord.VideoReader(io.BytesIO(data), num_threads=threads)
        idx = pick(vr.get_avg_fps(), len(vr))
        # one call, indices ascending: decord seeks to a keyframe only when it must
        frames = torch.from_numpy(vr.get_batch(idx).asnumpy())
    except Exception as e:                        # decord raises its own DECORDError types
        raise _bad_video(e) from None
    return idx, frames


def torchcodec_video_decoder():
    """torchcodec's VideoDecoder class, or ImportError saying what to install."""
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as e:   # not installed, or a wheel built for another torch/CUDA (OSError, RuntimeError)
        raise ImportError(
            f"decoder='torchcodec' needs the torchcodec package built for this torch ({torch.__version__}): "
            "`pip install torchcodec` for CUDA builds of torch (decoding on the GPU also needs FFmpeg "
            "with NVDEC), or `pip install torchcodec --index-url https://download.pytorch.org/whl/cpu` "
            f"for CPU-only torch; or use decoder='decord'. Import failed: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return VideoDecoder


def decode_torchcodec(data: bytes, pick: Pick, *, threads: int = 1, device: str = "cpu"):
    """torchcodec on the CPU or, with device "cuda[:N]", on NVDEC (frames stay on the GPU)."""
    VideoDecoder = torchcodec_video_decoder()      # a missing install is not the sample's fault
    try:
        # exact: frame i is frame i (one demux scan of the file, no decoding), like decord's index
        dec = VideoDecoder(data, dimension_order="NHWC", num_ffmpeg_threads=threads, device=device,
                           seek_mode="exact")
        md = dec.metadata
        idx = pick(getattr(md, "average_fps_from_header", None) or md.average_fps, len(dec))
        frames = dec.get_frames_at(idx).data
    except torch.cuda.OutOfMemoryError:            # the GPU's problem, not the sample's
        raise
    except Exception as e:
        raise _bad_video(e) from None
    return idx, frames


DECODERS = {"decord": decode_decord, "torchcodec": decode_torchcodec}


def check_decoder(decoder: str, device: str) -> None:
    """ValueError for a backend/device pair the loader does not support (imports nothing)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r}: choose one of {sorted(DECODERS)}")
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"decode_device {device!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
    if kind == "cuda" and decoder != "torchcodec":
        raise ValueError(f"decode_device {device!r} needs decoder='torchcodec' "
                         f"({decoder} decodes on the CPU only)")


def require_decoder(decoder: str, device: str) -> None:
    """Fail at set-up, in the main process, when the backend cannot run on this machine."""
    check_decoder(decoder, device)
    if decoder == "torchcodec":
        torchcodec_video_decoder()
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"decode_device {device!r} but torch sees no CUDA device")
