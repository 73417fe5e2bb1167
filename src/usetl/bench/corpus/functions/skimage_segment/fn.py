"""Image analysis as microscopy and document handlers do it with scikit-image: a sample
image bundled in the wheel, Gaussian and Sobel filters, Otsu thresholding, labelling and
region properties, morphology, a watershed split, resizing and a histogram equalisation,
and a PNG round trip through imageio."""

import hashlib
import io

import imageio.v3 as iio
import numpy as np
from scipy import ndimage as ndi
from skimage import data, exposure, feature, filters, measure, morphology, segmentation
from skimage.transform import resize
from skimage.util import img_as_ubyte


def h(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


def handler(event, context):
    coins = data.coins()
    smooth = filters.gaussian(coins, sigma=event["sigma"])
    edges = filters.sobel(smooth)
    t = filters.threshold_otsu(smooth)
    mask = morphology.remove_small_objects(smooth > t, 64)
    mask = morphology.binary_closing(mask, morphology.disk(2))
    labels = measure.label(mask)
    props = measure.regionprops(labels)
    areas = sorted((int(p.area) for p in props), reverse=True)[:5]
    distance = ndi.distance_transform_edt(mask)
    peaks = feature.peak_local_max(distance, min_distance=10, labels=labels)
    markers = np.zeros_like(labels)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    split = segmentation.watershed(-distance, markers, mask=mask)
    small = resize(coins, (coins.shape[0] // 4, coins.shape[1] // 4), anti_aliasing=True)
    eq = exposure.equalize_hist(coins)
    png = iio.imwrite("<bytes>", img_as_ubyte(small), extension=".png")
    back = iio.imread(io.BytesIO(png), extension=".png")
    return {"shape": list(coins.shape), "threshold": round(float(t), 6),
            "regions": len(props), "areas": areas, "peaks": len(peaks),
            "watershed": int(split.max()), "edges": round(float(edges.mean()), 6),
            "small": list(small.shape), "eq_mean": round(float(eq.mean()), 4),
            "png_roundtrip": bool((back == img_as_ubyte(small)).all()), "labels": h(labels)}
