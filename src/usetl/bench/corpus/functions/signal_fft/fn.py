"""Sensor-stream processing as IoT functions do it: numpy's FFT for the dominant
frequencies, a Butterworth band-pass with scipy.signal (sos, filtfilt), Welch's power
spectrum, peak detection, resampling and a convolution."""

import numpy as np
from scipy import signal


def handler(event, context):
    fs = event["rate"]
    rng = np.random.default_rng(event["seed"])
    t = np.arange(int(fs * event["seconds"])) / fs
    x = np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 120 * t) + rng.normal(0, 0.2, t.size)
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(x.size, 1 / fs)
    top = sorted(float(f) for f in freqs[np.argsort(spectrum)[-2:]])
    sos = signal.butter(4, [40, 60], btype="bandpass", fs=fs, output="sos")
    filtered = signal.sosfiltfilt(sos, x)
    f, pxx = signal.welch(filtered, fs=fs, nperseg=256)
    peaks, _ = signal.find_peaks(filtered, height=0.5, distance=fs // 60)
    resampled = signal.resample_poly(x, up=1, down=4)
    kernel = np.hanning(21)
    smooth = signal.fftconvolve(x, kernel / kernel.sum(), mode="same")
    real = np.fft.irfft(np.fft.rfft(x), n=x.size)
    return {"top": top, "welch_peak": float(f[np.argmax(pxx)]), "peaks": int(peaks.size),
            "resampled": int(resampled.size), "filtered_rms": round(float(np.sqrt(
                np.mean(filtered ** 2))), 6), "smooth_std": round(float(smooth.std()), 6),
            "roundtrip": bool(np.allclose(real, x))}
