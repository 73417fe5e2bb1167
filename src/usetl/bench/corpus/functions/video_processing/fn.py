"""FunctionBench video_processing: a video written to /tmp with OpenCV, its frames read back,
made grey and written out again."""

import os

import cv2
import numpy as np

W, H = 160, 120


def write_source(path, frames):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for f in range(frames):
        frame = np.zeros((H, W, 3), np.uint8)
        cv2.circle(frame, (10 + 7 * f, H // 2), 15, (0, 255, 255), -1)
        cv2.putText(frame, str(f), (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        writer.write(frame)
    writer.release()


def video_processing(src, dst):
    video = cv2.VideoCapture(src)
    out = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H), isColor=False)
    means = []
    while video.isOpened():
        ok, frame = video.read()
        if not ok:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        means.append(round(float(gray.mean()), 1))
        out.write(gray)
    video.release()
    out.release()
    return means


def handler(event, context):
    write_source("/tmp/video-in.avi", event["frames"])
    means = video_processing("/tmp/video-in.avi", "/tmp/video-out.avi")
    check = cv2.VideoCapture("/tmp/video-out.avi")
    count = int(check.get(cv2.CAP_PROP_FRAME_COUNT))
    check.release()
    return {"frames": len(means), "written": count, "rising": means[0] < means[-1] + 50,
            "bytes": os.path.getsize("/tmp/video-out.avi") > 0}
